#!/usr/bin/env bash
# Speed table (issue 23): `ptq quantize` per phase (forward, statistics, quantizer, evaluation) for
# RTN, GPTQ, GPTQ with two-stage scales, BoA, TurboBoA and the defaults (TurboBoA with two-stage
# scales), W4 for rtn/gptq and W2 for the rest (the defaults at W2 and W4), g128, on the demo and
# the 24M benchmark model, all in one run. Several binaries (e.g. before and after a change) run
# each configuration in turn, so their ratios are measured under the same load.
# Usage: bench/speed_table.sh [OUT_JSONL]   then   bench/speed_table.py OUT_JSONL   (markdown)
#   PTQ_ST_BINS="label=path ..."  binaries (default: now=build/ptq);  PTQ_ST_MODELS="demo small";
#   PTQ_ST_RUNS="name ..."  only these runs;  PTQ_ST_SAMPLES / PTQ_ST_SEQ_LEN  (default 128 x 256);
#   PTQ_ST_THREADS  --threads (default: all cores);  PTQ_ST_EVAL=0  no evaluation.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/speed_results.jsonl}
bins=${PTQ_ST_BINS:-now=build/ptq}
models=${PTQ_ST_MODELS:-"demo small"}
samples=${PTQ_ST_SAMPLES:-128}
seq_len=${PTQ_ST_SEQ_LEN:-256}
threads=${PTQ_ST_THREADS:-$(nproc)}
small=${PTQ_SMALL_MODEL:-../shared/models/small-llama-bytes}
small_data=${PTQ_SMALL_DATA:-../shared/data}

# name | ptq quantize flags. The classic methods pin the settings they name (today's defaults are
# TurboBoA with two-stage scales for every method); "defaults-*" take the defaults bare.
# (turboboa-next-default-w2 in older lines of speed_results.jsonl = defaults-w2.)
RUNS=(
  "rtn-w4|--method rtn --bits 4"
  "gptq-w4|--method gptq --bits 4 --scale-init minmax --refine-iters 0"
  "gptq-2stage-w2|--method gptq --bits 2 --scale-init hessian --refine-iters 2"
  "boa-w2|--method boa --bits 2 --scale-init minmax --refine-iters 0 --value-block"
  "turboboa-w2|--method turboboa --bits 2 --scale-init minmax --refine-iters 0 --value-block"
  "defaults-w2|--bits 2"
  "defaults-w4|--bits 4"
)
machine="$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
for model_name in $models; do
  case $model_name in
    demo) model=models/demo/tiny-llama-bytes; data=models/demo/data ;;
    small) model=$small; data=$small_data ;;
    *) echo "unknown model $model_name (demo or small)" >&2; exit 2 ;;
  esac
  [ -d "$model" ] || { echo "skipping $model (not found)" >&2; continue; }
  for run in "${RUNS[@]}"; do
    name=${run%%|*}
    flags=${run#*|}
    if [ -n "${PTQ_ST_RUNS:-}" ] && [[ " $PTQ_ST_RUNS " != *" $name "* ]]; then continue; fi
    for bin in $bins; do
      label=${bin%%=*}
      path=${bin#*=}
      eval_flags=()
      [ "${PTQ_ST_EVAL:-1}" = 0 ] || eval_flags=(--eval "$data/valid.txt" --skip-fp-eval)
      tmp=$(mktemp -d)
      load=$(cut -d' ' -f1 /proc/loadavg)
      # The process's CPU seconds (user + system) next to the wall-clock phases: on a shared machine
      # they measure the work where wall-clock time measures the load.
      # shellcheck disable=SC2086
      /usr/bin/time -f '%U %S' -o "$tmp/cpu" "$path" --threads "$threads" quantize --model "$model" \
        --calib "$data/calib.txt" "${eval_flags[@]}" --out "$tmp/q" --partial-groups \
        --samples "$samples" --seq-len "$seq_len" $flags --json 2>/dev/null > "$tmp/json"
      cpu=$(awk '{print $1 + $2}' "$tmp/cpu")
      sed "s|^{|{\"model_name\":\"$model_name\",\"run\":\"$name\",\"binary\":\"$label\",\"load_before\":$load,\"cpu_seconds\":$cpu,\"machine\":\"$machine\",|" \
        "$tmp/json" | tee -a "$out"
      rm -rf "$tmp"
    done
  done
done
