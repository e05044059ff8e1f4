#!/usr/bin/env bash
# Builds the unit tests with AddressSanitizer + UndefinedBehaviorSanitizer (gcc) in build-asan/ and
# runs the ones that exercise our parsers, stores and services (the libtorch-heavy quantizer tests are
# left to the normal build: Debian's libtorch is not instrumented and they take long under ASan).
# Usage: scripts/sanitize.sh [CTEST_REGEX]
set -euo pipefail
cd "$(dirname "$0")/.."
regex=${1:-"safetensors|model_config|gptq_format|access_tokens|path_confinement|metrics_test|exact_sum|worker_registry|sqlite_job_store|job_event_hub|job_scheduler|job_service|checkpoint_size"}
flags="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DPTQ_BUILD_BENCHMARKS=OFF \
  -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" >/dev/null
targets=$(cd build-asan && ctest -N -R "$regex" | sed -n 's/^ *Test *#[0-9]*: \([a-z_]*\)$/\1/p')
ninja -C build-asan $targets
# libtorch's own leaks at exit are not ours; UBSan and address errors still fail.
cd build-asan && ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
  OMP_WAIT_POLICY=PASSIVE OPENBLAS_THREAD_TIMEOUT=4 ctest -R "$regex" --output-on-failure
