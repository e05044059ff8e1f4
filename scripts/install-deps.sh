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
  python3 python3-yaml                       # test scripts; offline checks of deploy/
  python3-torch                              # the tests' reference readers and forwards (consumers' code)
  sentencepiece                              # spm_encode, for models with a tokenizer.model
  libicu-dev                                 # tokenizer.json: pre-tokenizer regexes, NFC
  ccache                                     # reuse objects across the two build variants and clones
  libxxhash-dev                              # the defined hash of resume keys and model fingerprints
  openssl iproute2                           # TLS certificates (tls_test, docs); ip netns (netns test)
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Tools only some tests use (they skip without them): kubectl for `kubectl kustomize` (any kubectl
# already on the PATH will do; Debian's kubernetes-client would clash with another kubectl package)
# and Debian's Prometheus server for the scrape test. Installed best-effort.
optional=()
command -v kubectl >/dev/null 2>&1 || optional+=(kubernetes-client)
command -v prometheus >/dev/null 2>&1 || optional+=(prometheus)
export DEBIAN_FRONTEND=noninteractive
if [ ${#missing[@]} -gt 0 ] || [ ${#optional[@]} -gt 0 ]; then
  apt-get update -q
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if [ ${#optional[@]} -gt 0 ]; then
  echo "installing (optional, for some tests): ${optional[*]}"
  apt-get install -y -q --no-install-recommends "${optional[@]}" ||
    echo "warning: could not install ${optional[*]}; the tests that need them will be skipped" >&2
fi
# Debian's libtorch uses whatever libblas.so.3 is selected; make sure it is OpenBLAS.
blas=$(ls /usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 2>/dev/null || true)
if [ -n "$blas" ]; then
  update-alternatives --set libblas.so.3-x86_64-linux-gnu "$blas" >/dev/null 2>&1 || true
fi
