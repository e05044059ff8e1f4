#!/usr/bin/env python3
"""Markdown table of bench/quality_table.sh's JSON lines: one row per run, perplexity and time."""
import json
import re
import sys

path = sys.argv[1] if len(sys.argv) > 1 else "bench/quality_results.jsonl"
rows = [json.loads(line) for line in open(path) if line.strip()]
print("| model | run | method | bits | group | joint rows | residual α | value block | scale init | refine sweeps | act order | static groups | sequential | ppl valid | quantize phase s | total s (incl. eval) |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    ph = r.get("phase_seconds", {})
    q = ph.get("forward", 0) + ph.get("statistics", 0) + ph.get("quantize", 0)
    attention = r["method"] in ("boa", "turboboa")
    joint = 1 if r["method"] == "boa" else (r.get("joint_rows", "") if attention else "")
    # Older lines lack these fields: derive them from the flags' defaults and the run name.
    alpha = r.get("residual_alpha", 0.0 if "noresid" in r["run"] or r["method"] != "turboboa" else 0.25)
    vblock = r.get("value_block", attention and "novblock" not in r["run"])
    vdamp = r.get("value_damp", -1)
    vtext = ("yes" if vdamp < 0 or vdamp == r.get("damp_percent") else f"yes (damp {vdamp:g})") if vblock else "no"
    print(f"| {r['model_name']} | {r['run']} | {r['method']} | {r['bits']} | {r['group_size']} | "
          f"{joint} | {alpha:g} | {vtext} | {r.get('scale_init', '')} | "
          f"{r.get('refine_iters', '')} | "
          f"{'yes' if r.get('act_order') else 'no'}{' (+ q/k rows)' if r.get('act_order_rows') else ''} | "
          f"{'yes' if r.get('static_groups') else 'no'} | "
          f"{'yes' if r.get('sequential', True) else 'no'} | "
          f"{r['perplexity_quant']:.4f} | "
          f"{q:.0f} (quantizer {ph.get('quantize', 0):.1f}) | {r['seconds']:.0f} |")

# The same settings over several calibration seeds (run names differ only by "-seedN"): at 2-3 bits
# on the small model one seed moves perplexity by up to 0.05, as much as most method differences.
groups = {}
for r in rows:
    base = re.sub(r"-seed\d+", "", r["run"])
    groups.setdefault((r["model_name"], base), {})[r.get("seed", 0)] = r["perplexity_quant"]
print()
print("| model | run (all seeds) | seeds | mean ppl | min | max | max - min |")
print("|---|---|---|---|---|---|---|")
for (model, base), by_seed in groups.items():
    if len(by_seed) < 2:
        continue
    values = [by_seed[s] for s in sorted(by_seed)]
    print(f"| {model} | {base} | {', '.join(str(s) for s in sorted(by_seed))} | "
          f"{sum(values) / len(values):.4f} | {min(values):.4f} | {max(values):.4f} | "
          f"{max(values) - min(values):.4f} |")
