#!/usr/bin/env bash
# The README's second command (and CI's): install, build, run every test and print ctest's summary.
# Also builds the core alone (-DPTQ_SERVICE=OFF, as a GPU machine with only PyTorch's libtorch builds
# it) in build-core/ and runs its CLI test there, so that variant cannot rot.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
PTQ_BUILD_DIR=build-core scripts/build.sh -DPTQ_SERVICE=OFF
(cd build-core && ctest --output-on-failure -R '^ptq_cli_test$')
scripts/build.sh
cd "${PTQ_BUILD_DIR:-build}"
ctest --output-on-failure -j "$(nproc)" "$@"
