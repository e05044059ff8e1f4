#!/usr/bin/env bash
# Run HERE (where apt works), before a GPU check: downloads the Debian 12 packages the core build
# (-DPTQ_SERVICE=OFF) needs beyond what the GPU machine has (it has CUDA, CMake, ninja, g++ and
# PyTorch's libtorch, but no apt and no network) into .gpu-debs/ (git-ignored), for the device
# tool to carry: run(command: "scripts/gpu_check.sh", carry: [".gpu-debs"]).
#
#   scripts/fetch_gpu_debs.sh [DIR]
#
# Headers and CMake configs (-dev) plus the shared libraries the binaries load at run time:
#   Abseil          libabsl-dev, libabsl20220623
#   spdlog + fmt    libspdlog-dev, libspdlog1.10, libfmt-dev, libfmt9
#   GoogleTest      libgtest-dev, libgmock-dev (static libraries; GTest's config names gmock too)
#   header-only     nlohmann-json3-dev, libcli11-dev, libxxhash-dev (+ libxxhash0, its .so target)
# Not carried: libtorch (PyTorch's is used), Gloo, gRPC, Protobuf, SQLite (the service is not built
# there; docs/gpu.md says why).
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-.gpu-debs}
packages=(libabsl-dev libabsl20220623 libspdlog-dev libspdlog1.10 libfmt-dev libfmt9
  libgtest-dev libgmock-dev nlohmann-json3-dev libcli11-dev libxxhash-dev libxxhash0)
if ! command -v apt-get >/dev/null; then
  echo "fetch_gpu_debs: apt-get not found: run this on the Debian 12 development machine" >&2
  exit 2
fi
if ! git check-ignore -q "$dest/x.deb" 2>/dev/null; then
  echo "fetch_gpu_debs: $dest is not git-ignored; the device tool carries only ignored paths" >&2
  exit 2
fi
mkdir -p "$dest"
rm -f "$dest"/*.deb
(cd "$dest" && apt-get download "${packages[@]}")
missing=0
for p in "${packages[@]}"; do
  if ! ls "$dest/${p}_"*.deb >/dev/null 2>&1; then
    echo "fetch_gpu_debs: $p was not downloaded" >&2
    missing=1
  fi
done
[ "$missing" = 0 ] || exit 1
ls -l "$dest"
echo "fetch_gpu_debs: $(ls "$dest"/*.deb | wc -l) packages, $(du -sh "$dest" | cut -f1) in $dest"
