#!/usr/bin/env bash
# The README's second command (and CI's): install, build, run every test and print ctest's summary.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
cd "${PTQ_BUILD_DIR:-build}"
ctest --output-on-failure -j "$(nproc)" "$@"
