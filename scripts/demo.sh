#!/usr/bin/env bash
# The README's first command: install, build, then quantize the demo model (GPTQ, 4 bits, groups of
# 128) and print perplexity before and after, the time taken and where the checkpoint is.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
out=${PTQ_DEMO_OUT:-out/tiny-llama-bytes-gptq-w4g128}
./build/ptq quantize --model models/demo/tiny-llama-bytes --calib models/demo/data/calib.txt \
  --eval models/demo/data/valid.txt --out "$out" --method gptq --bits 4 --group-size 128 \
  --partial-groups --force "$@"
