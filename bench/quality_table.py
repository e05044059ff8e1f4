#!/usr/bin/env python3
"""Markdown table of bench/quality_table.sh's JSON lines: one row per run, perplexity and time."""
import json
import sys

path = sys.argv[1] if len(sys.argv) > 1 else "bench/quality_results.jsonl"
rows = [json.loads(line) for line in open(path) if line.strip()]
print("| model | run | method | bits | group | joint rows | refine sweeps | ppl valid | quantize phase s | total s (incl. eval) |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    ph = r.get("phase_seconds", {})
    q = ph.get("forward", 0) + ph.get("statistics", 0) + ph.get("quantize", 0)
    print(f"| {r['model_name']} | {r['run']} | {r['method']} | {r['bits']} | {r['group_size']} | "
          f"{r.get('joint_rows', '')} | {r.get('refine_iters', '')} | {r['perplexity_quant']:.4f} | "
          f"{q:.0f} (quantizer {ph.get('quantize', 0):.1f}) | {r['seconds']:.0f} |")
