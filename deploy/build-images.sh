#!/usr/bin/env bash
# Builds the PTQ Service images with a container engine from Debian (podman, or docker.io) and
# smoke-tests them the way the Kubernetes manifests run them: a coordinator and two CPU workers, each
# in its own container on a container network of their own, as user 10001, with the job store at
# /var/lib/ptq and the models at /models, finish the demo job; its checkpoint must equal, byte for
# byte, the one `ptq quantize` writes in one process.
#
# Usage: deploy/build-images.sh [options]
#   --base IMAGE        the Debian 12 image the Dockerfiles start from (their BASE argument). Default:
#                       ptq/debian-base:12, made here with debootstrap from Debian's archive and
#                       imported into the engine (needs root and debootstrap) when it is not there.
#   --prebuilt DIR      put the ptq, ptq-coordinator and ptq-worker binaries of DIR (a build on
#                       Debian 12) in the images instead of compiling them in the image (BINARIES=
#                       prebuilt): much faster where a build folder is at hand.
#   --cuda-base IMAGE   also build the GPU worker (deploy/docker/worker.Dockerfile) on this CUDA
#                       devel image; --cuda-runtime IMAGE and --libtorch-url URL go with it.
#   --tag TAG           image tag (default 0.1.0)
#   --no-smoke          build only
# Environment: PTQ_ENGINE (podman or docker; default: whichever is installed, podman first),
# PTQ_ENGINE_FLAGS (global engine flags; podman's default here: --storage-driver vfs),
# PTQ_SMOKE_SUBNET (the smoke test's container network, default 10.77.1.0/24).
#
# Sandboxes: where the OCI runtime crun refuses a cgroup v1/v2 hybrid host ("cgroups in hybrid mode
# not supported") runc is used, and where the engine lacks CAP_SYS_RESOURCE (it cannot raise the
# containers' open-file and process limits to its defaults) the containers get limits below the
# current hard ones. docs/user-guide.md ("Build the images") says more.
set -euo pipefail
cd "$(dirname "$0")/.."

base="" prebuilt="" cuda_base="" cuda_runtime="" libtorch_url="" tag="0.1.0" smoke=1
while [ $# -gt 0 ]; do
  case "$1" in
    --base) base=$2; shift 2 ;;
    --prebuilt) prebuilt=$2; shift 2 ;;
    --cuda-base) cuda_base=$2; shift 2 ;;
    --cuda-runtime) cuda_runtime=$2; shift 2 ;;
    --libtorch-url) libtorch_url=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    --no-smoke) smoke=0; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-images.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

say() { echo "== $*"; }
fail() { echo "build-images.sh: error: $*" >&2; exit 1; }

# --- The engine and what this host needs of it.
engine=${PTQ_ENGINE:-}
if [ -z "$engine" ]; then
  if command -v podman >/dev/null; then engine=podman
  elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then engine=docker
  else fail "no container engine: apt-get install podman (or docker.io)"; fi
fi
read -r -a global <<<"${PTQ_ENGINE_FLAGS-$([ "$engine" = podman ] && echo --storage-driver vfs)}"
build_flags=() run_flags=()
if [ "$engine" = podman ]; then
  v2_controllers=$(cat /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null || true)
  if [ -n "$v2_controllers" ] && command -v runc >/dev/null; then
    say "cgroup v1/v2 hybrid host with v2 controllers ($v2_controllers): crun refuses it, using runc"
    global+=(--runtime runc)
    build_flags+=(--runtime runc)
  fi
  cap_eff=$(awk '/^CapEff/ {print $2}' /proc/self/status)
  if (( (16#$cap_eff >> 24 & 1) == 0 )); then  # CAP_SYS_RESOURCE
    # At most the hard limits; nproc at most 32768, the most podman's container init was allowed
    # here (found by trying: 32769 fails with EPERM).
    nofile=$(ulimit -Hn) nproc=$(ulimit -Hu)
    nofile=$(( nofile < 65536 ? nofile : 65536 )) nproc=$(( nproc < 32768 ? nproc : 32768 ))
    say "no CAP_SYS_RESOURCE: containers get nofile=$nofile and nproc=$nproc, not the engine's defaults"
    build_flags+=(--ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc")
    run_flags+=(--ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc")
  fi
fi
e() { "$engine" "${global[@]}" "$@"; }

# --- The base image.
if [ -z "$base" ]; then
  base=localhost/ptq/debian-base:12
  if ! e image exists "$base" 2>/dev/null && ! e image inspect "$base" >/dev/null 2>&1; then
    command -v debootstrap >/dev/null || fail "no --base and no debootstrap (apt-get install debootstrap)"
    rootfs=$(mktemp -d /tmp/ptq-debian-base.XXXXXX)
    say "debootstrap Debian 12 (minbase) into $rootfs"
    debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >"$rootfs.log" 2>&1 ||
      fail "debootstrap failed; see $rootfs.log"
    tar -C "$rootfs" --numeric-owner -c . | e import - "$base" >/dev/null
    rm -rf "$rootfs" "$rootfs.log"
  fi
fi
say "base image: $base"

# --- The binaries: compiled in the image, or a Debian 12 build folder's.
binaries=compiled
if [ -n "$prebuilt" ]; then
  binaries=prebuilt
  for b in ptq ptq-coordinator ptq-worker; do
    [ -x "$prebuilt/$b" ] || fail "--prebuilt $prebuilt has no $b (ninja -C $prebuilt ptq ptq-coordinator ptq-worker)"
  done
  rm -rf build/image && mkdir -p build/image/bin
  install -s "$prebuilt/ptq" "$prebuilt/ptq-coordinator" "$prebuilt/ptq-worker" build/image/bin/
  say "finding the runtime packages of $prebuilt's binaries"
  deploy/docker/runtime-packages.sh build/image/bin/* > build/image/runtime-packages.txt
fi

# --- The images.
say "ptq/coordinator:$tag (BINARIES=$binaries)"
e build "${build_flags[@]}" -f deploy/docker/coordinator.Dockerfile --build-arg "BASE=$base" \
  --build-arg "BINARIES=$binaries" -t "ptq/coordinator:$tag" .
say "ptq/worker-cpu:$tag"
e build "${build_flags[@]}" -f deploy/docker/worker-cpu.Dockerfile \
  --build-arg "COORDINATOR_IMAGE=ptq/coordinator:$tag" -t "ptq/worker-cpu:$tag" deploy/docker
if [ -n "$cuda_base" ]; then
  say "ptq/worker-cuda:$tag on $cuda_base"
  cuda_args=(--build-arg "CUDA_IMAGE=$cuda_base")
  [ -n "$cuda_runtime" ] && cuda_args+=(--build-arg "CUDA_RUNTIME_IMAGE=$cuda_runtime")
  [ -n "$libtorch_url" ] && cuda_args+=(--build-arg "LIBTORCH_URL=$libtorch_url")
  e build "${build_flags[@]}" -f deploy/docker/worker.Dockerfile "${cuda_args[@]}" \
    -t "ptq/worker-cuda:$tag" .
else
  say "ptq/worker-cuda: skipped (no --cuda-base: the CUDA base images are in registries not reachable from every host)"
fi
[ "$smoke" = 1 ] || exit 0

# --- The smoke test.
run=$$
net=ptq-smoke-$run
subnet=${PTQ_SMOKE_SUBNET:-10.77.1.0/24}
prefix=${subnet%.*}
coordinator_ip=$prefix.2
work=$(mktemp -d /tmp/ptq-smoke.XXXXXX)
containers=()
cleanup() {
  for c in "${containers[@]}"; do e logs "$c" >"$work/$c.log" 2>&1 || true; e rm -f "$c" >/dev/null 2>&1 || true; done
  e network rm "$net" >/dev/null 2>&1 || true
}
trap cleanup EXIT
mkdir -p "$work/models/data" "$work/store"
cp -r models/demo/tiny-llama-bytes "$work/models/"
cp models/demo/data/calib.txt "$work/models/data/"
chown -R 10001:10001 "$work/models" "$work/store"  # the pods' user (fsGroup 10001 on a cluster)
e network create --subnet "$subnet" "$net" >/dev/null
volumes=(-v "$work/models:/models" -v "$work/store:/var/lib/ptq")
job=(--model /models/tiny-llama-bytes --calib /models/data/calib.txt --method gptq --bits 4
     --group-size 64 --samples 32 --seq-len 64)
ptq_in() {  # ptq ARGS... in a client container on the network
  e run --rm "${run_flags[@]}" --network "$net" "${volumes[@]}" --entrypoint /usr/local/bin/ptq \
    "ptq/coordinator:$tag" "$@"
}

say "smoke: coordinator at $coordinator_ip and 2 workers on network $net ($subnet)"
containers+=(ptq-smoke-coordinator-$run)
e run -d "${run_flags[@]}" --name "ptq-smoke-coordinator-$run" --network "$net" --ip "$coordinator_ip" \
  "${volumes[@]}" "ptq/coordinator:$tag" --listen 0.0.0.0:50051 --store /var/lib/ptq/store.sqlite \
  --metrics 0.0.0.0:9464 --workers 2 --insecure --threads 1 >/dev/null
for i in 1 2; do
  containers+=(ptq-smoke-worker-$i-$run)
  e run -d "${run_flags[@]}" --name "ptq-smoke-worker-$i-$run" --network "$net" --ip "$prefix.$((10 + i))" \
    -v "$work/models:/models" "ptq/worker-cpu:$tag" --coordinator "$coordinator_ip:50051" \
    --host "$prefix.$((10 + i))" --insecure --threads 1 >/dev/null
done
id=$(ptq_in submit --coordinator "$coordinator_ip:50051" --insecure "${job[@]}" --out /models/out/service)
say "smoke: job $id submitted; watching"
ptq_in watch --coordinator "$coordinator_ip:50051" --insecure "$id" || fail "the job did not succeed; logs in $work"
say "smoke: the reference, ptq quantize in one process"
ptq_in quantize "${job[@]}" --out /models/out/reference >"$work/reference.log" 2>&1 ||
  fail "ptq quantize failed; see $work/reference.log"
for c in "${containers[@]}"; do
  [ "$(e inspect -f '{{.State.Running}}' "$c")" = true ] || fail "container $c stopped; logs in $work"
  user=$(e exec "$c" id -u)
  [ "$user" = 10001 ] || fail "container $c runs as user $user, not 10001"
done
cmp "$work/models/out/service/model.safetensors" "$work/models/out/reference/model.safetensors" ||
  fail "the service's checkpoint differs from ptq quantize's (kept in $work)"
say "smoke: OK: the 2-worker job's checkpoint equals ptq quantize's byte for byte; every container runs as 10001"
trap - EXIT
cleanup
rm -rf "$work"
