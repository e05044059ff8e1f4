#!/usr/bin/env bash
# Configures and builds with ninja into build/ (or $PTQ_BUILD_DIR); extra arguments go to cmake
# (e.g. -DPTQ_SERVICE=OFF for the core alone). Uses ccache when it is installed, so the second
# variant and a fresh clone reuse the first build's objects.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${PTQ_BUILD_DIR:-build}
launcher=()
if command -v ccache >/dev/null 2>&1; then
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
  # Paths relative to the checkout and no build-folder hashing: every build folder and clone shares
  # the cache.
  export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
fi
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "${launcher[@]}" "$@" >/dev/null
ninja -C "$build_dir"
