#!/usr/bin/env python3
"""Markdown table of bench/speed_table.sh's JSON lines: seconds per phase, one row per run and binary."""
import json
import sys

path = sys.argv[1] if len(sys.argv) > 1 else "bench/speed_results.jsonl"
rows = [json.loads(line) for line in open(path) if line.strip()]
print("| model | run | binary | forward s | statistics s | quantizer s | total s w/o eval | eval s | "
      "CPU s (user+sys) | stage outputs kept MiB | peak RSS MiB | ppl valid | load avg before |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    ph = r["phase_seconds"]
    print(f"| {r['model_name']} | {r['run']} | {r['binary']} | {ph['forward']:.1f} | "
          f"{ph['statistics']:.1f} | {ph['quantize']:.1f} | {r['seconds'] - ph['eval']:.1f} | "
          f"{ph['eval']:.1f} | {r.get('cpu_seconds', float('nan')):.1f} | {r.get('forward_cache_mib', 0):.0f} | {r['peak_rss_mib']:.0f} | "
          f"{r.get('perplexity_quant', float('nan')):.4f} | {r['load_before']} |")
if rows:
    print()
    print(f"Machine: {rows[0]['machine']}; threads {rows[0].get('threads')}; "
          f"{rows[0]['samples']} x {rows[0]['seq_len']} calibration tokens.")
