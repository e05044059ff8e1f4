#!/usr/bin/env bash
# The README's first command: install, build, then quantize the demo model (the default TurboBoA with
# two-stage scales, 4 bits with zero points, groups of 64, which divide every layer of it; --format
# auto writes compressed-tensors, which vLLM's Marlin kernel loads) and print perplexity before and
# after, the time taken, where the checkpoint is and which runtimes load it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
out=${PTQ_DEMO_OUT:-out/tiny-llama-bytes-w4g64}
./build/ptq quantize --model models/demo/tiny-llama-bytes --calib models/demo/data/calib.txt \
  --eval models/demo/data/valid.txt --out "$out" --bits 4 --group-size 64 \
  --force "$@"
