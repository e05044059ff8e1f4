#!/usr/bin/env bash
# Timing and quality of the baselines (issue 3): GPTQ W4 g128 timed per block and per phase with peak
# RSS, and RTN / GPTQ at W4 / W3 / W2 g128 perplexities on valid.txt, for the demo model and the 24M
# benchmark model. Settings of the independent reference: asymmetric min-max grid, damping 1%, blocks
# of 128, no act-order, 128 x 256 calibration tokens.
# Usage: bench/baseline_table.sh [OUT_JSONL]   (needs build/ptq; prints one JSON line per run)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/baseline_results.jsonl}
small=${PTQ_SMALL_MODEL:-../shared/models/small-llama-bytes}
data=${PTQ_DATA:-models/demo/data}
: > "$out"
for model in models/demo/tiny-llama-bytes "$small"; do
  [ -d "$model" ] || { echo "skipping $model (not found)" >&2; continue; }
  name=$(basename "$model")
  fp=$(./build/ptq eval --model "$model" --text "$data/valid.txt" --json 2>/dev/null)
  echo "{\"model\":\"$name\",\"method\":\"fp\",\"eval\":$fp}" | tee -a "$out"
  for bits in 4 3 2; do
    for method in rtn gptq; do
      tmp=$(mktemp -d)
      ./build/ptq quantize --model "$model" --calib "$data/calib.txt" --eval "$data/valid.txt" \
        --skip-fp-eval --out "$tmp/q" --method $method --bits $bits --group-size 128 \
        --partial-groups --samples 128 --seq-len 256 --json 2>/dev/null |
        sed "s/^{/{\"model_name\":\"$name\",/" | tee -a "$out"
      rm -rf "$tmp"
    done
  done
done
