#!/usr/bin/env bash
# Installs, from Debian 12's apt only, what PTQ Service needs to build, test and run. Idempotent: a
# package already present is not fetched again.
set -euo pipefail
packages=(
  build-essential cmake ninja-build pkg-config git
  libtorch-dev libopenblas0-pthread          # LibTorch; OpenBLAS instead of the ~20x slower reference BLAS
  libabsl-dev nlohmann-json3-dev libcli11-dev libspdlog-dev libsqlite3-dev
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  libgloo-dev libgtest-dev libgmock-dev
  libmicrohttpd-dev                          # /metrics endpoint (prometheus-cpp is not in Debian 12)
  kubernetes-client python3-yaml             # offline checks of deploy/ (kubectl kustomize)
  prometheus                                 # the scrape test: a real Prometheus reads /metrics
  sentencepiece                              # spm_encode, for models with a tokenizer.model
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# Debian's libtorch uses whatever libblas.so.3 is selected; make sure it is OpenBLAS.
blas=$(ls /usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 2>/dev/null || true)
if [ -n "$blas" ]; then
  update-alternatives --set libblas.so.3-x86_64-linux-gnu "$blas" >/dev/null 2>&1 || true
fi
