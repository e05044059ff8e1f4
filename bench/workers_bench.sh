#!/usr/bin/env bash
# Wall time of one job with 1, 2 and 4 local worker processes (`ptq quantize --workers N`) on the demo
# model, and the bytes rank 0 moved through the collectives. Prints the machine's core count: with
# fewer cores than workers the processes share them, so the figures show overhead, not speed-up.
# Usage: bench/workers_bench.sh [BUILD_DIR] [METHOD]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
method=${2:-gptq}
export OMP_WAIT_POLICY=PASSIVE OPENBLAS_THREAD_TIMEOUT=4
echo "cores: $(nproc); method $method W4 g64, 128 x 256 calibration tokens, demo model"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for n in 1 2 4; do
  start=$(date +%s.%N)
  "$build/ptq" quantize --model models/demo/tiny-llama-bytes --calib models/demo/data/calib.txt \
    --out "$tmp/w$n" --method "$method" --bits 4 --group-size 64 --workers "$n" --json 2>/dev/null >"$tmp/j$n"
  end=$(date +%s.%N)
  python3 - "$tmp/j$n" "$n" "$start" "$end" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
wall = float(sys.argv[4]) - float(sys.argv[3])
blocks = len(r["block_seconds"])
print(f"workers {sys.argv[2]}: wall {wall:.1f} s, job {r['seconds']:.1f} s, forward {r['phase_seconds']['forward']:.1f} s, "
      f"quantize {r['phase_seconds']['quantize']:.1f} s, statistics all-reduce {r['collective_seconds']:.2f} s, "
      f"collective bytes (rank 0) {r['collective_bytes_rank0'] / blocks / 2**20:.1f} MiB per block")
PY
  cmp -s "$tmp/w1/model.safetensors" "$tmp/w$n/model.safetensors" || echo "  checkpoint DIFFERS from one worker"
done

# The same job through the service: ptq-coordinator --workers N and N ptq-worker processes on
# loopback. The difference to `ptq quantize --workers N` is the service's overhead (registration,
# rendezvous over gRPC, progress reports, scheduling).
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export PTQ_INSECURE=1
for n in 1 2 4; do
  "$build/ptq-coordinator" --listen 127.0.0.1:$port --store "$tmp/jobs-$n.db" --workers $n --insecure \
    2>"$tmp/coordinator-$n.log" &
  coordinator=$!
  workers=()
  for i in $(seq 1 $n); do
    "$build/ptq-worker" --coordinator 127.0.0.1:$port --threads $(( ($(nproc) + n - 1) / n )) \
      2>"$tmp/worker-$n-$i.log" &
    workers+=($!)
  done
  until "$build/ptq" list --coordinator 127.0.0.1:$port >/dev/null 2>&1; do sleep 0.2; done
  start=$(date +%s.%N)
  job=$("$build/ptq" submit --coordinator 127.0.0.1:$port --model models/demo/tiny-llama-bytes \
    --calib models/demo/data/calib.txt --out "$tmp/s$n" --method "$method" --bits 4 --group-size 64)
  "$build/ptq" watch --coordinator 127.0.0.1:$port "$job" >/dev/null
  end=$(date +%s.%N)
  python3 -c "print(f'service, {$n} worker(s): submit to finish {$end - $start:.1f} s')"
  cmp -s "$tmp/w1/model.safetensors" "$tmp/s$n/model.safetensors" || echo "  checkpoint DIFFERS from one worker"
  kill "${workers[@]}" $coordinator; wait 2>/dev/null || true
done
