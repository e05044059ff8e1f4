#!/usr/bin/env bash
# The GPU check (docs/gpu.md), one run on the GPU machine, under 10 minutes, results under $OUT:
#   1. environment: PyTorch (CUDA, C++ ABI, CMake path), compiler, CMake, nvcc, glibc, libstdc++
#   2. unpack the carried Debian packages (.gpu-debs/, from scripts/fetch_gpu_debs.sh) into a prefix
#      and check that this machine's glibc and libstdc++ can load them
#   3. configure the core (-DPTQ_SERVICE=OFF) with PyTorch's libtorch, CUDA for this GPU, NCCL from
#      PyTorch's package; check that CMake took the prefix's packages
#   4. build the tests, ptq and the block benchmark (in that order, so a slow build still tests)
#   5. check the binaries' run-time linkage (every library found, libtorch_cuda loaded)
#   6. ctest -L gpu and the kernel and NCCL tests
#   7. ptq quantize --device cuda and --device cpu on models/demo: perplexity within 0.5 %
#   8. bench/gpu_block_bench (kernels on, then off) and bench/plain_gptq_block.py on the same block
# Every step prints PASS / FAIL / SKIP with a diagnosis; the summary is repeated at the end.
#
#   On the GPU machine, through the device tool, with the packages carried:
#     run(command: "scripts/gpu_check.sh", carry: [".gpu-debs"], timeout_s: 600)
#   Here, without a GPU, to prove the mechanics (unpack, configure against the prefix with Debian's
#   CPU libtorch, build, linkage, tests that skip, the comparisons on CPU runs):
#     scripts/gpu_check.sh --cpu-dry-run
#
# Environment: OUT (results; default out/gpu-check), PTQ_GPU_WORK (prefix and build tree, kept out of
# $OUT so only results travel back; default /tmp/ptq-gpu), PTQ_GPU_DEBS (default .gpu-debs),
# PTQ_GPU_BUDGET_S (seconds for the whole run; default 560), PTQ_GPU_JOBS (build jobs; default
# all cores), PTQ_NO_DPKG=1 (unpack with Python even where dpkg exists).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD

MODE=gpu
case "${1:-}" in
  "") ;;
  --cpu-dry-run) MODE=dry ;;
  *) echo "usage: scripts/gpu_check.sh [--cpu-dry-run]" >&2; exit 2 ;;
esac

START=$(date +%s)
# The dry run builds on a small machine: ten times the time for every step.
if [ "$MODE" = dry ]; then SLOW=10; else SLOW=1; fi
BUDGET=${PTQ_GPU_BUDGET_S:-$((560 * SLOW))}
DEADLINE=$((START + BUDGET))
if [ "$MODE" = dry ]; then
  OUT=${OUT:-/tmp/ptq-gpu-dry/out}
  WORK=${PTQ_GPU_WORK:-/tmp/ptq-gpu-dry}
else
  OUT=${OUT:-$ROOT/out/gpu-check}
  WORK=${PTQ_GPU_WORK:-/tmp/ptq-gpu}
fi
DEBS=${PTQ_GPU_DEBS:-$ROOT/.gpu-debs}
PREFIX=$WORK/deps
BUILD=$WORK/build
JOBS=${PTQ_GPU_JOBS:-$(nproc)}
MULTIARCH=x86_64-linux-gnu
mkdir -p "$OUT" "$WORK"
# $OUT comes back with at most 8 files: this log, the summary, the build and test logs, and JSON.
LOG=$OUT/gpu_check.log
SUMMARY=$OUT/summary.txt
: >"$LOG"
: >"$SUMMARY"

elapsed() { echo $(($(date +%s) - START)); }
left() { echo $((DEADLINE - $(date +%s))); }
step() { echo; echo "==== [$(elapsed) s] $*"; }
record() {  # STATUS STEP DETAIL...
  local status=$1 name=$2
  shift 2
  printf '%-4s %-12s %s\n' "$status" "$name" "$*" | tee -a "$SUMMARY"
}
pass() { record PASS "$@"; }
fail() { record FAIL "$@"; }
skip() { record SKIP "$@"; }
finish() {
  echo
  echo "==== summary ($MODE mode, $(elapsed) s of $BUDGET)"
  cat "$SUMMARY"
  if grep -q '^FAIL' "$SUMMARY"; then exit 1; fi
  exit 0
}
abort() {  # STEP DETAIL: a failure the later steps cannot get past
  fail "$@"
  finish
}
# Runs a command with at most SECONDS (times SLOW, never past the deadline); 124 on a timeout.
bounded() {
  local secs=$(($1 * SLOW))
  shift
  local cap=$(($(left) - 5))
  [ "$secs" -gt "$cap" ] && secs=$cap
  if [ "$secs" -le 0 ]; then return 124; fi
  timeout --kill-after=10 "$secs" "$@"
}
have() { command -v "$1" >/dev/null 2>&1; }

main() {
# ---------------------------------------------------------------------------------------------
step "1. environment"
uname -a
[ -r /etc/os-release ] && grep -E '^(PRETTY_NAME)=' /etc/os-release
GLIBC=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')
echo "glibc: ${GLIBC:-unknown}"
have nvidia-smi && nvidia-smi -L
if ! have g++; then abort environment "no g++: nvcc and the C++ build need a host compiler"; fi
echo "g++: $(g++ -dumpfullversion)"
LIBSTDCXX=$(g++ -print-file-name=libstdc++.so.6)
LIBSTDCXX=$(readlink -f "$LIBSTDCXX" 2>/dev/null || echo "$LIBSTDCXX")
echo "libstdc++: $LIBSTDCXX"
if ! have cmake; then abort environment "no cmake on PATH"; fi
cmake --version | head -1
if ! have ninja; then abort environment "no ninja on PATH"; fi
echo "ninja: $(ninja --version)"
NVCC=""
if have nvcc; then NVCC=$(command -v nvcc); elif [ -x /usr/local/cuda/bin/nvcc ]; then NVCC=/usr/local/cuda/bin/nvcc; fi
if [ -n "$NVCC" ]; then
  "$NVCC" --version | tail -2
  export CUDACXX=$NVCC
  CUDA_ROOT=$(dirname "$(dirname "$(readlink -f "$NVCC")")")
else
  CUDA_ROOT=""
  echo "no nvcc: the CUDA kernels and NCCL collective will not be built"
fi

if [ "$MODE" = gpu ]; then
  if ! have python3 || ! python3 -c 'import torch' 2>/dev/null; then
    abort environment "python3 cannot import torch: PyTorch's libtorch is what this build links"
  fi
  python3 - <<'PY' | tee "$WORK/torch.env"
import os, shlex, torch
def out(k, v): print("%s=%s" % (k, shlex.quote(str(v))))
out("TORCH_VERSION", torch.__version__)
out("TORCH_CUDA", torch.version.cuda)
out("TORCH_CUDA_AVAILABLE", int(torch.cuda.is_available()))
out("TORCH_DEVICE", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
out("TORCH_CXX11_ABI", int(torch._C._GLIBCXX_USE_CXX11_ABI))
out("TORCH_CMAKE", torch.utils.cmake_prefix_path)
out("TORCH_LIB", os.path.join(os.path.dirname(torch.__file__), "lib"))
nccl = ""
try:
    import nvidia.nccl as m
    nccl = list(m.__path__)[0]
except Exception:
    pass
out("TORCH_NCCL", nccl)
PY
  # shellcheck disable=SC1091
  . "$WORK/torch.env"
  if [ "${TORCH_CUDA:-None}" = None ]; then abort environment "this PyTorch has no CUDA (torch.version.cuda is None)"; fi
  if [ "$TORCH_CUDA_AVAILABLE" != 1 ]; then abort environment "PyTorch sees no CUDA device (driver? CUDA_VISIBLE_DEVICES?)"; fi
  if [ "$TORCH_CXX11_ABI" != 1 ]; then
    abort environment "PyTorch's libtorch uses the pre-C++11 std::string ABI (_GLIBCXX_USE_CXX11_ABI=0);" \
      "Debian's Abseil, spdlog, fmt and GoogleTest use the C++11 ABI, so they cannot link into one binary." \
      "Use a cxx11-abi libtorch (PyTorch >= 2.7 wheels are) or build those libraries with -D_GLIBCXX_USE_CXX11_ABI=0"
  fi
  if [ -n "$CUDA_ROOT" ]; then
    NVCC_CUDA=$("$NVCC" --version | sed -n 's/.*release \([0-9]*\.[0-9]*\).*/\1/p')
    if [ "${NVCC_CUDA%%.*}" != "${TORCH_CUDA%%.*}" ]; then
      echo "WARNING: nvcc is CUDA $NVCC_CUDA, PyTorch was built for CUDA $TORCH_CUDA: two CUDA runtimes may load"
    fi
  fi
  pass environment "torch $TORCH_VERSION (CUDA $TORCH_CUDA, $TORCH_DEVICE, C++11 ABI), g++ $(g++ -dumpfullversion), glibc ${GLIBC:-?}, nvcc ${NVCC_CUDA:-none}"
else
  TORCH_CMAKE=/usr/lib/$MULTIARCH/cmake
  TORCH_NCCL=""
  if [ ! -f "$TORCH_CMAKE/Torch/TorchConfig.cmake" ]; then abort environment "no Debian libtorch (libtorch-dev) for the dry run"; fi
  if ! grep -q '_GLIBCXX_USE_CXX11_ABI=1' "$TORCH_CMAKE/Torch/TorchConfig.cmake"; then
    abort environment "Debian's libtorch does not declare the C++11 ABI"
  fi
  pass environment "dry run: Debian's CPU libtorch ($TORCH_CMAKE/Torch), g++ $(g++ -dumpfullversion), glibc ${GLIBC:-?}"
fi

# ---------------------------------------------------------------------------------------------
step "2. unpack the carried Debian packages into $PREFIX"
shopt -s nullglob
debs=("$DEBS"/*.deb)
if [ ${#debs[@]} -eq 0 ]; then
  abort unpack "no .deb files in $DEBS: run scripts/fetch_gpu_debs.sh on the development machine and carry .gpu-debs"
fi
rm -rf "$PREFIX"
mkdir -p "$PREFIX"
# dpkg -x where dpkg exists; else Python reads the ar archive and its data.tar.* (xz, gz or zstd).
unpack_deb() {
  if [ "${PTQ_NO_DPKG:-0}" != 1 ] && have dpkg; then
    dpkg -x "$1" "$PREFIX"
    return
  fi
  python3 - "$1" "$PREFIX" <<'PY'
import io, sys, tarfile
deb, dest = sys.argv[1], sys.argv[2]
data = open(deb, "rb").read()
assert data[:8] == b"!<arch>\n", "not an ar archive"
pos = 8
while pos < len(data):
    name = data[pos:pos + 16].decode().strip().rstrip("/")
    size = int(data[pos + 48:pos + 58].decode().strip())
    body = data[pos + 60:pos + 60 + size]
    pos += 60 + size + (size & 1)
    if not name.startswith("data.tar"):
        continue
    if name.endswith(".zst"):
        try:
            import zstandard
        except ImportError:
            sys.exit("data.tar.zst needs dpkg or the zstandard module")
        body = zstandard.ZstdDecompressor().decompress(body, max_output_size=1 << 31)
    with tarfile.open(fileobj=io.BytesIO(body)) as t:
        t.extractall(dest)
    break
else:
    sys.exit("no data.tar member")
PY
}
unpack_failed=""
for f in "${debs[@]}"; do
  unpack_deb "$f" || unpack_failed="$unpack_failed $(basename "$f")"
done
[ -n "$unpack_failed" ] && abort unpack "could not unpack:$unpack_failed"
# Absolute symbolic links would point into this machine's /usr: make them point into the prefix.
while IFS= read -r link; do
  target=$(readlink "$link")
  if [ -e "$PREFIX$target" ]; then ln -sfn "$PREFIX$target" "$link"; fi
done < <(find "$PREFIX" -type l -lname '/*')
LIBDIR=$PREFIX/usr/lib/$MULTIARCH
missing=""
for need in "$LIBDIR/cmake/absl/abslConfig.cmake" "$LIBDIR/cmake/spdlog/spdlogConfig.cmake" \
  "$LIBDIR/cmake/fmt/fmt-config.cmake" "$LIBDIR/cmake/GTest/GTestConfig.cmake" \
  "$PREFIX/usr/share/cmake/nlohmann_json/nlohmann_jsonConfig.cmake" \
  "$PREFIX/usr/share/cmake/CLI11/CLI11Config.cmake" "$PREFIX/usr/include/xxhash.h" \
  "$LIBDIR/libgmock.a"; do
  [ -e "$need" ] || missing="$missing ${need#"$PREFIX"/}"
done
[ -n "$missing" ] && abort unpack "missing after unpacking:$missing (re-run scripts/fetch_gpu_debs.sh)"
# Can this machine load them? The newest glibc and libstdc++ symbol versions the libraries ask for
# against what this machine's glibc and the compiler's libstdc++ provide.
read -r need_glibc need_glibcxx < <(python3 - "$LIBDIR" <<'PY'
import os, re, sys
glibc, glibcxx = (0,), (0,)
for name in os.listdir(sys.argv[1]):
    path = os.path.join(sys.argv[1], name)
    if ".so" not in name or os.path.islink(path) or not os.path.isfile(path):
        continue
    data = open(path, "rb").read()
    for m in re.finditer(rb"GLIBC_(\d+(?:\.\d+)+)\x00", data):
        glibc = max(glibc, tuple(int(x) for x in m.group(1).split(b".")))
    for m in re.finditer(rb"GLIBCXX_(\d+(?:\.\d+)+)\x00", data):
        glibcxx = max(glibcxx, tuple(int(x) for x in m.group(1).split(b".")))
print(".".join(map(str, glibc)), ".".join(map(str, glibcxx)))
PY
)
have_glibcxx=$(python3 - "$LIBSTDCXX" <<'PY'
import re, sys
try:
    data = open(sys.argv[1], "rb").read()
except OSError:
    print("0"); sys.exit()
v = max((tuple(int(x) for x in m.group(1).split(b".")) for m in re.finditer(rb"GLIBCXX_(\d+(?:\.\d+)+)\x00", data)), default=(0,))
print(".".join(map(str, v)))
PY
)
echo "the packages need glibc >= $need_glibc and libstdc++ GLIBCXX >= $need_glibcxx;" \
  "this machine: glibc ${GLIBC:-?}, GLIBCXX $have_glibcxx"
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -1)" = "$2" ]; }
if [ -n "$GLIBC" ] && ! version_ge "$GLIBC" "$need_glibc"; then
  abort unpack "this machine's glibc $GLIBC is older than the $need_glibc Debian 12's libraries need:" \
    "carry packages of an older release, or build Abseil/spdlog/fmt from source here"
fi
if [ "$have_glibcxx" != 0 ] && ! version_ge "$have_glibcxx" "$need_glibcxx"; then
  abort unpack "the compiler's libstdc++ ($have_glibcxx) is older than the $need_glibcxx the packages need"
fi
export LD_LIBRARY_PATH=$LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
pass unpack "${#debs[@]} packages into $PREFIX (need glibc $need_glibc, GLIBCXX $need_glibcxx: loadable here)"

# ---------------------------------------------------------------------------------------------
step "3. configure the core"
# The prefix first: a Torch path that holds other packages' configs too (Debian's
# /usr/lib/x86_64-linux-gnu/cmake) must not shadow the carried ones.
cmake_args=(-S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPTQ_SERVICE=OFF
  -DPTQ_BUILD_TESTS=ON -DPTQ_BUILD_BENCHMARKS=ON
  "-DCMAKE_PREFIX_PATH=$PREFIX/usr;$TORCH_CMAKE" "-DTorch_DIR=$TORCH_CMAKE/Torch"
  "-DCMAKE_LIBRARY_ARCHITECTURE=$MULTIARCH")
if [ "$MODE" = gpu ]; then
  cmake_args+=(-DCMAKE_CUDA_ARCHITECTURES=native)
else
  cmake_args+=(-DCMAKE_CUDA_ARCHITECTURES=90)  # no GPU to detect here
fi
[ -n "$CUDA_ROOT" ] && cmake_args+=("-DCUDAToolkit_ROOT=$CUDA_ROOT")
if [ -n "${TORCH_NCCL:-}" ]; then
  nccl_h=$(find "$TORCH_NCCL" -name nccl.h 2>/dev/null | head -1)
  nccl_so=$(find "$TORCH_NCCL" -name 'libnccl.so*' 2>/dev/null | sort | head -1)
  if [ -n "$nccl_h" ] && [ -n "$nccl_so" ]; then
    cmake_args+=("-DPTQ_NCCL_INCLUDE_DIR=$(dirname "$nccl_h")" "-DPTQ_NCCL_LIBRARY=$nccl_so")
    echo "NCCL from PyTorch's package: $nccl_h, $nccl_so"
  fi
fi
# CMake 4 refuses package configs that ask for policies older than 3.5; Debian 12's ask for ranges
# whose upper end is recent, but be safe.
export CMAKE_POLICY_VERSION_MINIMUM=3.5
if have ccache; then
  cmake_args+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
  export CCACHE_BASEDIR=$ROOT CCACHE_NOHASHDIR=1
fi
echo "cmake ${cmake_args[*]}"
rm -f "$BUILD/CMakeCache.txt"  # no package location remembered from an earlier run
if ! bounded 240 cmake "${cmake_args[@]}" >"$WORK/configure.log" 2>&1; then
  tail -40 "$WORK/configure.log"
  hint=""
  grep -q 'CUDAToolkit' "$WORK/configure.log" && hint="$hint; PyTorch's CMake config needs the CUDA toolkit (CUDAToolkit_ROOT=$CUDA_ROOT)"
  grep -q -i 'cudnn' "$WORK/configure.log" && hint="$hint; it looked for cuDNN: try -DCAFFE2_USE_CUDNN=OFF"
  grep -q 'Could not find a package configuration file' "$WORK/configure.log" && hint="$hint; a package config was not found in $PREFIX/usr or $TORCH_CMAKE"
  abort configure "cmake failed (tail above; $WORK/configure.log)$hint"
fi
cat "$WORK/configure.log" | grep -E 'CUDA kernels|Gloo|microhttpd|Torch|Caffe2|WARNING' | head -20
cache=$BUILD/CMakeCache.txt
from_prefix=""
elsewhere=""
for pkg in absl spdlog fmt GTest nlohmann_json CLI11; do
  dir=$(sed -n "s/^${pkg}_DIR:[A-Z]*=//p" "$cache")
  case "$dir" in
    "$PREFIX"/*) from_prefix="$from_prefix $pkg" ;;
    *) elsewhere="$elsewhere $pkg=$dir" ;;
  esac
done
torch_dir=$(sed -n 's/^Torch_DIR:[A-Z]*=//p' "$cache")
echo "from the prefix:$from_prefix; elsewhere:${elsewhere:- none}; Torch: $torch_dir"
torch_cuda=$(grep -o 'PTQ_TORCH_CUDA): [A-Z]*' "$WORK/configure.log" | awk '{print $2}')
nccl_found=$(grep -o 'NCCL: [A-Z]*' "$WORK/configure.log" | awk '{print $2}')
if [ -n "$elsewhere" ]; then
  fail configure "packages not taken from the prefix:$elsewhere (a copy on this machine's paths would mix versions)"
fi
if [ "$MODE" = gpu ] && [ "$torch_cuda" != ON ]; then
  abort configure "PTQ_TORCH_CUDA is off: the Torch package has no c10_cuda target or C10_CUDA_LIBRARY (Torch_DIR=$torch_dir)"
fi
[ -z "$NVCC" ] || [ -n "$nccl_found" ] || echo "WARNING: the configure log does not say whether NCCL was found"
# PyTorch ships fmt (and maybe nlohmann-json) headers of other versions in torch/include; spdlog was
# built against the packaged fmt. Which fmt/format.h does a core translation unit see first?
fmt_seen=$(python3 - "$BUILD/compile_commands.json" <<'PY'
import json, os, shlex, sys
cmds = json.load(open(sys.argv[1]))
cmd = next(c for c in cmds if c["file"].endswith("core/stats/hessian_accumulator.cc"))
args = shlex.split(cmd["command"])
quote, system = [], []
for i, a in enumerate(args):
    for flag, bucket in (("-I", quote), ("-isystem", system)):
        if a == flag and i + 1 < len(args):
            bucket.append(args[i + 1])
        elif a.startswith(flag) and len(a) > len(flag) and flag == "-I":
            bucket.append(a[2:])
for d in quote + system:  # gcc: every -I before every -isystem
    if os.path.exists(os.path.join(d, "fmt", "format.h")):
        print(d)
        break
PY
)
grep -q 'holds fmt/nlohmann headers' "$WORK/configure.log" && grep 'holds fmt/nlohmann headers' "$WORK/configure.log"
echo "a core translation unit includes fmt from: ${fmt_seen:-nowhere}"
case "$fmt_seen" in
  "$PREFIX"/*) ;;
  *) fail configure "spdlog's users would compile against ${fmt_seen:-no} fmt headers, not the packaged fmt spdlog was built with (libtorch's fmt first?)" ;;
esac
pass configure "Torch $torch_dir; PTQ_TORCH_CUDA=${torch_cuda:-OFF}; NCCL=${nccl_found:-OFF}; prefix packages:$from_prefix"

# ---------------------------------------------------------------------------------------------
step "4. build"
gpu_tests=$(cd "$ROOT/tests/gpu" && ls ./*_test.cc | sed 's|^\./||; s|\.cc$||')
kernel_tests="aten_kernels_test gptq_block_test gptq_pack_test hessian_accumulate_test quant_dequant_test"
test_targets="$gpu_tests $kernel_tests"
grep -q 'NCCL: ON' "$WORK/configure.log" && test_targets="$test_targets nccl_collective_test"
build_log=$OUT/build.log
: >"$build_log"
built=""
build_group() {  # NAME TARGETS...
  local name=$1
  shift
  echo "ninja -j$JOBS $*"
  if bounded 420 ninja -C "$BUILD" -j"$JOBS" "$@" >>"$build_log" 2>&1; then
    built="$built $name"
    return 0
  fi
  local rc=$?
  grep -E 'error|undefined reference|FAILED' "$build_log" | head -20
  local why="ninja failed"
  [ $rc = 124 ] && why="out of time (budget $BUDGET s)"
  grep -q "undefined reference.*__cxx11" "$build_log" && why="$why; std::string ABI mismatch between libtorch and the Debian libraries"
  grep -q "GLIBC_[0-9.]* not found\|GLIBCXX_[0-9.]* not found" "$build_log" && why="$why; a library needs a newer glibc/libstdc++"
  grep -q "No such file or directory" "$build_log" && why="$why; a header is missing (a Debian config naming /usr/include?)"
  grep -q "unsupported GNU version" "$build_log" && why="$why; nvcc does not support this g++ (set CUDAHOSTCXX)"
  grep -E "error|undefined reference" "$build_log" | grep -q "fmt" && why="$why; an fmt version clash (libtorch's fmt headers against the packaged fmt 9 spdlog was built with)"
  fail build "$name: $why (see build.log)"
  return 1
}
# shellcheck disable=SC2086
build_group tests $test_targets
build_group ptq ptq
build_group bench gpu_block_bench
[ -n "$built" ] && pass build "built:$built in $(elapsed) s so far"

# ---------------------------------------------------------------------------------------------
step "5. run-time linkage"
probe=$BUILD/kernels_aten_gpu_test
if [ -x "$probe" ]; then
  ldd "$probe" | grep -E 'not found|absl_status\.|spdlog|fmt|torch|c10|cudart|nccl' | sed 's/ (0x.*//'
  if ldd "$probe" | grep -q 'not found'; then
    fail linkage "libraries not found at run time: $(ldd "$probe" | grep 'not found' | awk '{print $1}' | tr '\n' ' ')"
  elif ! ldd "$probe" | grep -q "libabsl_status.so.* => $LIBDIR"; then
    fail linkage "Abseil loads from $(ldd "$probe" | sed -n 's/.*libabsl_status.so[^ ]* => \([^ ]*\).*/\1/p'), not the prefix"
  elif [ "$MODE" = gpu ] && ! ldd "$probe" | grep -q 'libtorch_cuda'; then
    fail linkage "libtorch_cuda.so is not loaded: ATen would have no CUDA backend (linker --as-needed?)"
  else
    pass linkage "every library found; Abseil, spdlog and fmt from the prefix$([ "$MODE" = gpu ] && echo '; libtorch_cuda loaded')"
  fi
  # PyTorch links fmt into libc10; the same fmt version exported twice would be two copies of one ABI.
  c10=$(ldd "$probe" | sed -n 's/.*libc10.so[^ ]* => \([^ ]*\).*/\1/p')
  if [ -n "$c10" ] && have nm && nm -D --defined-only "$c10" 2>/dev/null | grep -q 'fmt::v9'; then
    echo "WARNING: $c10 exports fmt::v9 symbols, the same version as Debian's libfmt9 (risk of two copies)"
  fi
else
  skip linkage "no test binary was built"
fi

# ---------------------------------------------------------------------------------------------
step "6. tests"
ctest_log=$OUT/ctest.log
: >"$ctest_log"
if [ -n "$built" ] && [[ " $built " == *" tests "* ]]; then
  (cd "$BUILD" && OMP_WAIT_POLICY=PASSIVE bounded 300 ctest -L gpu --output-on-failure) >>"$ctest_log" 2>&1
  gpu_rc=$?
  kernel_regex="^($(echo "$kernel_tests nccl_collective_test" | tr ' ' '|'))$"
  (cd "$BUILD" && OMP_WAIT_POLICY=PASSIVE bounded 240 ctest -R "$kernel_regex" --output-on-failure) >>"$ctest_log" 2>&1
  kernel_rc=$?
  grep -E 'Test +#|tests passed|Skipped|Failed|SEGFAULT|Timeout' "$ctest_log" | sed 's/^ *//'
  skipped=$(grep -c '\*\*\*Skipped' "$ctest_log")
  if [ $gpu_rc = 0 ] && [ $kernel_rc = 0 ]; then
    if [ "$MODE" = gpu ] && [ "$skipped" -gt 0 ]; then
      fail tests "all passed but $skipped skipped on a GPU machine (see ctest.log for the reasons)"
    else
      pass tests "ctest -L gpu and the kernel/NCCL tests passed ($skipped skipped$([ "$MODE" = dry ] && echo ': no GPU here, expected'))"
    fi
  else
    fail tests "failures: $(grep -E '^\s+[0-9]+ - ' "$ctest_log" | sed 's/^ *//' | tr '\n' ';') (ctest.log)"
  fi
else
  skip tests "the tests were not built"
fi

# ---------------------------------------------------------------------------------------------
step "7. ptq quantize on models/demo: CUDA against CPU"
PTQ=$BUILD/ptq
run_quantize() {  # NAME THREADS FLAGS...
  local name=$1 threads=$2
  shift 2
  bounded 300 "$PTQ" --threads "$threads" quantize --model "$ROOT/models/demo/tiny-llama-bytes" \
    --calib "$ROOT/models/demo/data/calib.txt" --eval "$ROOT/models/demo/data/valid.txt" \
    --out "$WORK/demo-$name" --method gptq --bits 4 --group-size 128 --partial-groups --force \
    --json "$@" >"$WORK/quantize-$name.json" 2>"$WORK/quantize-$name.err"
}
if [ ! -x "$PTQ" ]; then
  skip quantize "ptq was not built"
elif [ "$(left)" -lt $((150 * SLOW)) ]; then
  skip quantize "out of time ($(left) s left)"
else
  if "$PTQ" quantize --help 2>/dev/null | grep -q -- '--device'; then
    a_flags="--device cuda" b_flags="--device cpu" a=cuda b=cpu
  elif [ "$MODE" = dry ]; then
    # No --device yet: compare two CPU runs, which proves the comparison below.
    a_flags="--eval-windows 64" b_flags="--eval-windows 64" a=cpu-a b=cpu-b
  else
    a_flags="" b_flags="" a="" b=""
  fi
  if [ -z "$a" ]; then
    skip quantize "this ptq has no --device flag yet (being added in parallel); nothing to compare"
  else
    cpu_threads=$((JOBS > 4 ? JOBS - 2 : JOBS))
    export OMP_WAIT_POLICY=PASSIVE
    # Both runs at once: the CUDA run needs few cores, the CPU run the rest.
    # shellcheck disable=SC2086
    run_quantize "$b" "$cpu_threads" $b_flags &
    b_pid=$!
    # shellcheck disable=SC2086
    run_quantize "$a" 2 $a_flags
    a_rc=$?
    wait $b_pid
    b_rc=$?
    cp "$WORK/quantize-$a.json" "$OUT/quantize-$a.json" 2>/dev/null
    cp "$WORK/quantize-$b.json" "$OUT/quantize-$b.json" 2>/dev/null
    if [ $a_rc != 0 ] || [ $b_rc != 0 ]; then
      tail -5 "$WORK/quantize-$a.err" "$WORK/quantize-$b.err"
      fail quantize "ptq quantize exited $a_rc ($a) and $b_rc ($b)$([ $a_rc = 124 ] || [ $b_rc = 124 ] && echo ': out of time')"
    else
      verdict=$(python3 - "$WORK/quantize-$a.json" "$WORK/quantize-$b.json" "$a" "$b" <<'PY'
import json, sys
a, b = (json.loads(open(p).read().strip().splitlines()[-1]) for p in sys.argv[1:3])
pa, pb = a.get("perplexity_quant"), b.get("perplexity_quant")
if pa is None or pb is None:
    print("FAIL no perplexity_quant in the JSON"); sys.exit()
rel = abs(pa - pb) / pb
status = "PASS" if rel <= 0.005 else "FAIL"
print("%s perplexity %s %.4f, %s %.4f: %.3f %% apart (limit 0.5 %%); %s took %.1f s, %s %.1f s"
      % (status, sys.argv[3], pa, sys.argv[4], pb, 100 * rel, sys.argv[3], a.get("seconds", -1),
         sys.argv[4], b.get("seconds", -1)))
PY
)
      record "${verdict%% *}" quantize "${verdict#* }"
    fi
  fi
fi

# ---------------------------------------------------------------------------------------------
step "8. block benchmark: ours (kernels on, off) and the plain PyTorch baseline"
BENCH_JSON=$OUT/bench.txt
: >"$BENCH_JSON"
BENCH=$BUILD/gpu_block_bench
if [ "$MODE" = gpu ]; then bench_args=(--device cuda); else bench_args=(--device cpu --small); fi
bench_run() {  # NAME SECONDS ARGS...
  local name=$1 secs=$2
  shift 2
  if [ "$(left)" -lt 30 ]; then skip "$name" "out of time"; return; fi
  echo "$name: $*" | tee -a "$BENCH_JSON"
  bounded "$secs" "$@" >>"$BENCH_JSON" 2>"$WORK/$name.err"
  local rc=$?
  cat "$WORK/$name.err" | tail -3
  case $rc in
    0) pass "$name" "$(grep -o '"gptq_block_with_statistics_s": [0-9.]*' "$BENCH_JSON" | tail -1) (bench.txt)" ;;
    124) fail "$name" "out of time" ;;
    139|134) fail "$name" "crashed (signal $((rc - 128))): e.g. GptqQuantizeWithFactor or HessianAccumulator not taking CUDA tensors yet" ;;
    *) fail "$name" "exited $rc: $(tail -1 "$WORK/$name.err")" ;;
  esac
}
if [ -x "$BENCH" ]; then
  bench_run bench-on 240 "$BENCH" "${bench_args[@]}" --kernels on
  bench_run bench-off 240 "$BENCH" "${bench_args[@]}" --kernels off
else
  skip bench "gpu_block_bench was not built"
fi
if [ "$MODE" = gpu ]; then
  if [ "$(left)" -lt 30 ]; then
    skip baseline "out of time"
  else
    echo "baseline: python3 bench/plain_gptq_block.py" | tee -a "$BENCH_JSON"
    if PYTHONUNBUFFERED=1 bounded 240 python3 "$ROOT/bench/plain_gptq_block.py" >>"$BENCH_JSON" 2>"$WORK/baseline.err"; then
      pass baseline "$(grep -o '"gptq_w4_block_s": [0-9.]*' "$BENCH_JSON" | tail -1) (bench.txt)"
    else
      tail -3 "$WORK/baseline.err"
      fail baseline "plain_gptq_block.py failed or ran out of time"
    fi
  fi
else
  skip baseline "the PyTorch baseline needs CUDA"
fi

finish
}

# Everything the steps print goes to the terminal and to $LOG.
main 2>&1 | tee -a "$LOG"
exit "${PIPESTATUS[0]}"
