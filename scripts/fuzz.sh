#!/usr/bin/env bash
# Builds the libFuzzer targets in tests/fuzz/ with clang (ASan + UBSan) and runs each for a bounded
# time from the seed corpus of real files. Exits non-zero if a fuzzer finds a crash; the crashing
# input is kept in $out/crashes/.
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET]  (default 30)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
out=${PTQ_FUZZ_DIR:-build-fuzz}
command -v clang++ >/dev/null || { echo "clang++ not found (apt-get install clang)"; exit 77; }
mkdir -p "$out/crashes"
flags="-std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I."
libs=$(pkg-config --libs absl_status absl_statusor absl_strings absl_str_format)
common="common/safetensors_reader.cc common/dtype.cc common/mapped_file.cc common/model_config.cc common/gptq_format.cc"
for target in tests/fuzz/*_fuzz.cc; do
  name=$(basename "$target" .cc)
  corpus_name=${name%_fuzz}
  clang++ $flags "$target" $common $libs -o "$out/$name"
  work="$out/corpus-$corpus_name"
  mkdir -p "$work"
  echo "== $name: $seconds s from tests/fuzz/corpus/$corpus_name"
  "$out/$name" -max_total_time="$seconds" -max_len=8192 -artifact_prefix="$out/crashes/$name-" \
    -print_final_stats=1 "$work" "tests/fuzz/corpus/$corpus_name" 2>&1 | tail -n 12
done
