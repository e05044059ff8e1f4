#!/usr/bin/env bash
# Builds the libFuzzer targets in tests/fuzz/ with clang (ASan + UBSan) and runs each for a bounded
# time from the seed corpus of real files. Exits non-zero if a fuzzer finds a crash; the crashing
# input is kept in $out/crashes/.
# The parser targets (safetensors header, config.json, GPTQ packing) compile their few sources here.
# The job-spec and checkpoint-reader targets exercise code that needs LibTorch and the generated
# protos: only the target's own file is instrumented (coverage comes from it and from the sources
# listed in `instrumented` below); the rest links from the regular build (scripts/build.sh first),
# with the link line CMake wrote for a test that uses the same libraries.
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]  (default 30 s, every target)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
seconds=${1:-30}
shift || true
out=${PTQ_FUZZ_DIR:-build-fuzz}
build=${PTQ_BUILD_DIR:-build}
command -v clang++ >/dev/null || { echo "clang++ not found (apt-get install clang)"; exit 77; }
mkdir -p "$out/crashes"
out=$(cd "$out" && pwd)
flags="-std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I$root"
libs=$(pkg-config --libs absl_status absl_statusor absl_strings absl_str_format)
common="common/safetensors_reader.cc common/dtype.cc common/mapped_file.cc common/model_config.cc common/gptq_format.cc"

# Targets that link the regular build: the sources compiled again with instrumentation, and the
# test whose link line supplies everything else.
declare -A instrumented=(
  [job_spec_fuzz]="worker/quantize_spec.cc core/pipeline/quantize_options.cc common/path_confinement.cc common/model_config.cc"
  [checkpoint_reader_fuzz]="core/checkpoint/gptq_weight_source.cc core/model/llama_model.cc common/model_files.cc common/safetensors_reader.cc common/gptq_format.cc"
)
link_like=quantize_spec_test

build_linked() {  # name source
  local name=$1 source=$2
  [ -f "$build/build.ninja" ] || { echo "$name needs the regular build in $build (scripts/build.sh)"; return 1; }
  (cd "$build" && ninja ptq_server "$link_like" >/dev/null)
  # Defines and include paths from the test's compile command (LibTorch's, the generated protos').
  local commands torch_flags link
  commands=$(cd "$build" && ninja -t commands "$link_like")
  torch_flags=$(grep -- "-c .*/$link_like.cc" <<<"$commands" | tr ' ' '\n' | awk '/^-isystem$/ {getline p; printf "-isystem %s ", p; next}
                        /^-[DI]/ && !/PTQ_(SOURCE|BINARY)_DIR/ {printf "%s ", $0}')
  # The link line after "-o <test>", without the test's own object and GoogleTest.
  link=$(tail -n1 <<<"$commands" |
    sed -e "s/.* -o $link_like //" -e 's#[^ ]*libgtest[^ ]*##g' -e 's#libptq_test_proto.a##g' -e 's/ && :$//' -e 's/"//g')
  # C++17: clang 14 cannot compile LibTorch 1.13's ATen.h as C++20 (c10::IValue incomplete in
  # std::vector); these sources need nothing newer.
  # shellcheck disable=SC2086
  (cd "$build" && clang++ ${flags/-std=c++20/-std=c++17} $torch_flags -Wno-unused-command-line-argument \
     "$root/$source" $(for s in ${instrumented[$name]}; do echo "$root/$s"; done) \
     -o "$out/$name" $link)
}

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=($(ls tests/fuzz/*_fuzz.cc | xargs -n1 basename | sed 's/\.cc$//'))
for name in "${targets[@]}"; do
  target=tests/fuzz/$name.cc
  corpus_name=${name%_fuzz}
  if [ -n "${instrumented[$name]:-}" ]; then
    build_linked "$name" "$target"
    max_len=65536
  else
    # shellcheck disable=SC2086
    clang++ $flags "$target" $common $libs -o "$out/$name"
    max_len=8192
  fi
  work="$out/corpus-$corpus_name"
  mkdir -p "$work"
  echo "== $name: $seconds s from tests/fuzz/corpus/$corpus_name"
  # LibTorch and protobuf keep caches for the life of the process: leak checks off for every target.
  status=0
  PTQ_SOURCE_DIR=$root "$out/$name" -max_total_time="$seconds" -max_len=$max_len -detect_leaks=0 \
    -artifact_prefix="$out/crashes/$name-" -print_final_stats=1 \
    "$work" "tests/fuzz/corpus/$corpus_name" >"$out/$name.log" 2>&1 || status=$?
  tail -n 12 "$out/$name.log"
  [ "$status" -eq 0 ] || { echo "$name found a crash (exit $status): $out/crashes/, log $out/$name.log"; exit 1; }
done
