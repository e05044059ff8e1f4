#!/usr/bin/env bash
# Quality and time of the attention-aware methods (issue 4) against GPTQ: perplexity on valid.txt
# after `ptq quantize` with 128 x 256 calibration tokens from calib.txt (seed 0), asymmetric min-max
# grid, damping 1 %, no act-order, groups of 128 (--partial-groups for the demo model's MLP width 704).
# Runs are listed most important first (the machine has 2 shared cores; a full small-model run takes
# about 5 minutes, most of it the evaluation), so a time-limited run still yields the headline cells.
# Usage: bench/quality_table.sh [OUT_JSONL] [BUILD_DIR]
#   PTQ_QT_MODELS="small demo"  which models;  PTQ_QT_THREADS=N  --threads;  PTQ_QT_RUNS="name ..."  only these runs (see RUNS).
# Prints and appends one JSON line per run; bench/quality_table.py turns them into the markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/quality_results.jsonl}
build=${2:-build}
small=${PTQ_SMALL_MODEL:-../shared/models/small-llama-bytes}
small_data=${PTQ_SMALL_DATA:-../shared/data}
models=${PTQ_QT_MODELS:-"small demo"}

# name | ptq quantize flags
# turboboa = all three features (16 joint rows, --residual-alpha 0.25, adaptive grids) plus BoA's
# value block; the ablations switch one off each; "2stage" adds both stages of the group scales.
# Static-group runs use --mse: until commit 6953ebe static grids ignored --scale-init hessian's
# weights, so the recorded rows ran this unweighted search (bit-identical); "hstatic" runs the
# weighted one (docs/results.md, "Stage 1 with static groups").
# Since commit d596d0f every search also tries the neighbouring zero point and weighs by the damped H
# (docs/results.md, "The reference code read line by line"); rows recorded before it ran without;
# the "-zs" runs are the ones recorded after it. "cov" / "sm": --qk-hessian covariance / softmax
# (commit c2f0e99; the two "cov-w2" rows ran its first form, a --center-keys flag, the same formula).
# "rows": --act-order-rows (q/k rows of each head by decreasing diag(H_out)).
# Every run below was recorded with the defaults of its time: min-max grids, no refinement, the value
# block on and the GPTQ format. The loop adds those flags where a run does not set them, so each name
# keeps its meaning now that the defaults are two-stage TurboBoA without the value block; the
# "defaults-*" runs take today's defaults bare.
RUNS=(
  # Symmetric grids (issue 22; zero 2^(b-1), what vLLM's Marlin/Machete serve): every flag explicit,
  # so the loop adds none (the "defaults" here are today's: TurboBoA, no value block, two-stage).
  # "oldsearch" ran main's binary of commit facb383 (the symmetric search before the sign-aware range).
  "sym-gptq-w3|--sym --method gptq --scale-init minmax --refine-iters 0 --format auto --bits 3"
  "sym-gptq-2stage-w3|--sym --method gptq --scale-init hessian --refine-iters 2 --format auto --bits 3"
  "sym-defaults-w3|--sym --method turboboa --no-value-block --scale-init hessian --refine-iters 2 --format auto --bits 3"
  "sym-defaults-oldsearch-w3|--sym --method turboboa --no-value-block --scale-init hessian --refine-iters 2 --format auto --bits 3"
  "sym-gptq-seed1-w3|--sym --method gptq --scale-init minmax --refine-iters 0 --format auto --seed 1 --bits 3"
  "sym-gptq-2stage-seed1-w3|--sym --method gptq --scale-init hessian --refine-iters 2 --format auto --seed 1 --bits 3"
  "sym-defaults-seed1-w3|--sym --method turboboa --no-value-block --scale-init hessian --refine-iters 2 --format auto --seed 1 --bits 3"
  "sym-gptq-w4|--sym --method gptq --scale-init minmax --refine-iters 0 --format auto --bits 4"
  "sym-gptq-2stage-w4|--sym --method gptq --scale-init hessian --refine-iters 2 --format auto --bits 4"
  "sym-defaults-w4|--sym --method turboboa --no-value-block --scale-init hessian --refine-iters 2 --format auto --bits 4"
  "sym-gptq-seed1-w4|--sym --method gptq --scale-init minmax --refine-iters 0 --format auto --seed 1 --bits 4"
  "sym-gptq-2stage-seed1-w4|--sym --method gptq --scale-init hessian --refine-iters 2 --format auto --seed 1 --bits 4"
  "sym-defaults-seed1-w4|--sym --method turboboa --no-value-block --scale-init hessian --refine-iters 2 --format auto --seed 1 --bits 4"
  "sym-gptq-2stage-seed2-w3|--sym --method gptq --scale-init hessian --refine-iters 2 --format auto --seed 2 --bits 3"
  "sym-defaults-seed2-w3|--sym --method turboboa --no-value-block --scale-init hessian --refine-iters 2 --format auto --seed 2 --bits 3"
  "sym-gptq-2stage-seed3-w3|--sym --method gptq --scale-init hessian --refine-iters 2 --format auto --seed 3 --bits 3"
  "sym-defaults-seed3-w3|--sym --method turboboa --no-value-block --scale-init hessian --refine-iters 2 --format auto --seed 3 --bits 3"
  "defaults-w2|--bits 2"
  "defaults-w3|--bits 3"
  "defaults-seed1-w2|--seed 1 --bits 2"
  "defaults-seed1-w3|--seed 1 --bits 3"
  "defaults-seed2-w2|--seed 2 --bits 2"
  "defaults-seed2-w3|--seed 2 --bits 3"
  "defaults-seed3-w2|--seed 3 --bits 2"
  "defaults-seed3-w3|--seed 3 --bits 3"
  # The residual correction's full-precision stream on every 4th / 2nd calibration batch
  # (--residual-every, 2026-12-05, session 15), otherwise the bare defaults.
  "defaults-every4-w2|--residual-every 4 --bits 2"
  "defaults-every4-seed1-w2|--residual-every 4 --seed 1 --bits 2"
  "defaults-every4-seed2-w2|--residual-every 4 --seed 2 --bits 2"
  "defaults-every4-seed3-w2|--residual-every 4 --seed 3 --bits 2"
  "defaults-every4-w3|--residual-every 4 --bits 3"
  "defaults-every4-seed1-w3|--residual-every 4 --seed 1 --bits 3"
  "defaults-every4-seed2-w3|--residual-every 4 --seed 2 --bits 3"
  "defaults-every4-seed3-w3|--residual-every 4 --seed 3 --bits 3"
  "defaults-every2-w2|--residual-every 2 --bits 2"
  "defaults-every2-seed1-w2|--residual-every 2 --seed 1 --bits 2"
  "defaults-every2-seed2-w2|--residual-every 2 --seed 2 --bits 2"
  "defaults-every2-seed3-w2|--residual-every 2 --seed 3 --bits 2"
  # The defaults without the residual correction (alpha by width, issue 23).
  "defaults-a0-w2|--residual-alpha 0 --bits 2"
  "defaults-a0-w3|--residual-alpha 0 --bits 3"
  "defaults-a0-seed1-w2|--residual-alpha 0 --seed 1 --bits 2"
  "defaults-a0-seed1-w3|--residual-alpha 0 --seed 1 --bits 3"
  "defaults-a0-seed2-w2|--residual-alpha 0 --seed 2 --bits 2"
  "defaults-a0-seed2-w3|--residual-alpha 0 --seed 2 --bits 3"
  "defaults-a0-seed3-w2|--residual-alpha 0 --seed 3 --bits 2"
  "defaults-a0-seed3-w3|--residual-alpha 0 --seed 3 --bits 3"
  "gptq-2stage-zs-w2|--method gptq --scale-init hessian --refine-iters 2 --bits 2"
  "gptq-2stage-zs-w3|--method gptq --scale-init hessian --refine-iters 2 --bits 3"
  "turboboa-2stage-zs-w2|--method turboboa --scale-init hessian --refine-iters 2 --bits 2"
  "turboboa-2stage-zs-w3|--method turboboa --scale-init hessian --refine-iters 2 --bits 3"
  "gptq-2stage-a25-zs-w3|--method gptq --residual-alpha 0.25 --scale-init hessian --refine-iters 2 --bits 3"
  "gptq-2stage-a25-zs-w2|--method gptq --residual-alpha 0.25 --scale-init hessian --refine-iters 2 --bits 2"
  "gptq-2stage-a25-zs-seed1-w3|--method gptq --residual-alpha 0.25 --scale-init hessian --refine-iters 2 --seed 1 --bits 3"
  "gptq-2stage-zs-seed1-w3|--method gptq --scale-init hessian --refine-iters 2 --seed 1 --bits 3"
  "turboboa-2stage-actorder-zs-w3|--method turboboa --mse --refine-iters 2 --act-order --static-groups --bits 3"
  "boa-2stage-zs-w2|--method boa --scale-init hessian --refine-iters 2 --bits 2"
  "boa-2stage-cov-w2|--method boa --qk-hessian covariance --scale-init hessian --refine-iters 2 --bits 2"
  "turboboa-2stage-cov-w2|--method turboboa --qk-hessian covariance --scale-init hessian --refine-iters 2 --bits 2"
  "boa-2stage-sm-w2|--method boa --qk-hessian softmax --scale-init hessian --refine-iters 2 --bits 2"
  "turboboa-2stage-sm-w2|--method turboboa --qk-hessian softmax --scale-init hessian --refine-iters 2 --bits 2"
  "boa-2stage-zs-w3|--method boa --scale-init hessian --refine-iters 2 --bits 3"
  "boa-2stage-cov-w3|--method boa --qk-hessian covariance --scale-init hessian --refine-iters 2 --bits 3"
  "boa-2stage-zs-seed1-w2|--method boa --scale-init hessian --refine-iters 2 --seed 1 --bits 2"
  "boa-2stage-cov-seed1-w2|--method boa --qk-hessian covariance --scale-init hessian --refine-iters 2 --seed 1 --bits 2"
  "gptq-2stage-actorder-zs-w3|--method gptq --scale-init hessian --refine-iters 2 --act-order --bits 3"
  "gptq-2stage-actorder-zs-w2|--method gptq --scale-init hessian --refine-iters 2 --act-order --bits 2"
  "boa-2stage-nvb-w2|--method boa --no-value-block --scale-init hessian --refine-iters 2 --bits 2"
  "turboboa-2stage-nvb-w2|--method turboboa --no-value-block --scale-init hessian --refine-iters 2 --bits 2"
  "turboboa-2stage-nvb-w3|--method turboboa --no-value-block --scale-init hessian --refine-iters 2 --bits 3"
  "turboboa-2stage-vd10-w2|--method turboboa --value-damp 0.1 --scale-init hessian --refine-iters 2 --bits 2"
  "turboboa-2stage-vd100-w2|--method turboboa --value-damp 1 --scale-init hessian --refine-iters 2 --bits 2"
  "turboboa-2stage-zs-seed1-w3|--method turboboa --scale-init hessian --refine-iters 2 --seed 1 --bits 3"
  "turboboa-2stage-nvb-seed2-w2|--method turboboa --no-value-block --scale-init hessian --refine-iters 2 --seed 2 --bits 2"
  "turboboa-2stage-nvb-seed1-w3|--method turboboa --no-value-block --scale-init hessian --refine-iters 2 --seed 1 --bits 3"
  "turboboa-2stage-nvb-seed1-w2|--method turboboa --no-value-block --scale-init hessian --refine-iters 2 --seed 1 --bits 2"
  "turboboa-2stage-zs-seed1-w2|--method turboboa --scale-init hessian --refine-iters 2 --seed 1 --bits 2"
  "gptq-2stage-zs-seed1-w2|--method gptq --scale-init hessian --refine-iters 2 --seed 1 --bits 2"
  "turboboa-2stage-nvb-seed2-w3|--method turboboa --no-value-block --scale-init hessian --refine-iters 2 --seed 2 --bits 3"
  "gptq-2stage-zs-seed2-w3|--method gptq --scale-init hessian --refine-iters 2 --seed 2 --bits 3"
  "turboboa-2stage-zs-seed2-w3|--method turboboa --scale-init hessian --refine-iters 2 --seed 2 --bits 3"
  "turboboa-2stage-nvb-seed3-w3|--method turboboa --no-value-block --scale-init hessian --refine-iters 2 --seed 3 --bits 3"
  "gptq-2stage-zs-seed3-w3|--method gptq --scale-init hessian --refine-iters 2 --seed 3 --bits 3"
  "gptq-2stage-zs-w4|--method gptq --scale-init hessian --refine-iters 2 --bits 4"
  "turboboa-2stage-zs-w4|--method turboboa --scale-init hessian --refine-iters 2 --bits 4"
  "turboboa-2stage-zs-seed1-w4|--method turboboa --scale-init hessian --refine-iters 2 --seed 1 --bits 4"
  "gptq-2stage-zs-seed1-w4|--method gptq --scale-init hessian --refine-iters 2 --seed 1 --bits 4"
  "rtn-pc-w3|--method rtn --bits 3 --group-size -1"
  "turboboa-2stage-nvb-rows-w3|--method turboboa --no-value-block --act-order-rows --scale-init hessian --refine-iters 2 --bits 3"
  "turboboa-2stage-nvb-rows-seed1-w3|--method turboboa --no-value-block --act-order-rows --scale-init hessian --refine-iters 2 --seed 1 --bits 3"
  "turboboa-2stage-nvb-rows-seed2-w3|--method turboboa --no-value-block --act-order-rows --scale-init hessian --refine-iters 2 --seed 2 --bits 3"
  "turboboa-2stage-nvb-rows-seed3-w3|--method turboboa --no-value-block --act-order-rows --scale-init hessian --refine-iters 2 --seed 3 --bits 3"
  "turboboa-2stage-nvb-rows-w2|--method turboboa --no-value-block --act-order-rows --scale-init hessian --refine-iters 2 --bits 2"
  "turboboa-hstatic-r0-zs-w2|--method turboboa --scale-init hessian-block --refine-iters 0 --static-groups --bits 2"
  "turboboa-2stage-w2|--method turboboa --scale-init hessian --refine-iters 2 --bits 2"
  "turboboa-2stage-w3|--method turboboa --scale-init hessian --refine-iters 2 --bits 3"
  "gptq-w2|--method gptq --bits 2"
  "turboboa-w2|--method turboboa --bits 2"
  "boa-w2|--method boa --bits 2"
  "gptq-2stage-w2|--method gptq --scale-init hessian --refine-iters 2 --bits 2"
  "turboboa-noresid-w2|--method turboboa --residual-alpha 0 --bits 2"
  "turboboa-novblock-w2|--method turboboa --no-value-block --bits 2"
  "turboboa-n4-w2|--method turboboa --joint-rows 4 --bits 2"
  "turboboa-2stage-actorder-w2|--method turboboa --mse --refine-iters 2 --act-order --static-groups --bits 2"
  "turboboa-2stage-actorder-w3|--method turboboa --mse --refine-iters 2 --act-order --static-groups --bits 3"
  "turboboa-2stage-actorder-hstatic-w3|--method turboboa --scale-init hessian --refine-iters 2 --act-order --static-groups --bits 3"
  "turboboa-2stage-actorder-hstatic-w2|--method turboboa --scale-init hessian --refine-iters 2 --act-order --static-groups --bits 2"
  "turboboa-2stage-actorder-minmax-w3|--method turboboa --refine-iters 2 --act-order --static-groups --bits 3"
  "turboboa-2stage-actorder-p2-w3|--method turboboa --mse --refine-iters 2 --requant-passes 2 --act-order --static-groups --bits 3"
  "turboboa-2stage-actorder-minmax-w2|--method turboboa --refine-iters 2 --act-order --static-groups --bits 2"
  "turboboa-2stage-actorder-p2-w2|--method turboboa --mse --refine-iters 2 --requant-passes 2 --act-order --static-groups --bits 2"
  "gptq-actorder-w2|--method gptq --act-order --static-groups --bits 2"
  "turboboa-2stage-actorder-w4|--method turboboa --mse --refine-iters 2 --act-order --static-groups --bits 4"
  "turboboa-2stage-actorder-n8-r4-w3|--method turboboa --mse --refine-iters 4 --act-order --static-groups --joint-rows 8 --bits 3"
  "turboboa-2stage-actorder-a0-w4|--method turboboa --residual-alpha 0 --mse --refine-iters 2 --act-order --static-groups --bits 4"
  "turboboa-2stage-actorder-a0-w3|--method turboboa --residual-alpha 0 --mse --refine-iters 2 --act-order --static-groups --bits 3"
  "turboboa-2stage-actorder-a01-w3|--method turboboa --residual-alpha 0.1 --mse --refine-iters 2 --act-order --static-groups --bits 3"
  "turboboa-2stage-actorder-seed1-w3|--method turboboa --mse --refine-iters 2 --act-order --static-groups --seed 1 --bits 3"
  "turboboa-2stage-actorder-a05-w3|--method turboboa --residual-alpha 0.5 --mse --refine-iters 2 --act-order --static-groups --bits 3"
  "turboboa-2stage-actorder-noseq-w2|--method turboboa --mse --refine-iters 2 --act-order --static-groups --no-sequential --bits 2"
  "turboboa-2stage-static-w2|--method turboboa --mse --refine-iters 2 --static-groups --bits 2"
  "turboboa-2stage-actorder-r0-w2|--method turboboa --mse --refine-iters 0 --act-order --static-groups --bits 2"
  "turboboa-2stage-n8-w2|--method turboboa --scale-init hessian --refine-iters 2 --joint-rows 8 --bits 2"
  "turboboa-2stage-r4-w2|--method turboboa --scale-init hessian --refine-iters 4 --bits 2"
  "gptq-2stage-a25-w2|--method gptq --residual-alpha 0.25 --scale-init hessian --refine-iters 2 --bits 2"
  "turboboa-2stage-a0-w2|--method turboboa --residual-alpha 0 --scale-init hessian --refine-iters 2 --bits 2"
  "boa-2stage-w2|--method boa --scale-init hessian --refine-iters 2 --bits 2"
  "gptq-2stage-actorder-w2|--method gptq --mse --refine-iters 2 --act-order --static-groups --bits 2"
  "gptq-2stage-a25-w3|--method gptq --residual-alpha 0.25 --scale-init hessian --refine-iters 2 --bits 3"
  "gptq-2stage-actorder-w3|--method gptq --mse --refine-iters 2 --act-order --static-groups --bits 3"
  "gptq-w3|--method gptq --bits 3"
  "turboboa-w3|--method turboboa --bits 3"
  "boa-w3|--method boa --bits 3"
  "gptq-2stage-w3|--method gptq --scale-init hessian --refine-iters 2 --bits 3"
  "turboboa-2stage-w4|--method turboboa --scale-init hessian --refine-iters 2 --bits 4"
  "gptq-w4|--method gptq --bits 4"
  "rtn-w2|--method rtn --bits 2"
  "rtn-w3|--method rtn --bits 3"
  "rtn-w4|--method rtn --bits 4"
  "turboboa-2stage-pc-w2|--method turboboa --scale-init hessian --refine-iters 2 --bits 2 --group-size -1"
  "gptq-pc-w2|--method gptq --bits 2 --group-size -1"
  "turboboa-2stage-pc-w3|--method turboboa --scale-init hessian --refine-iters 2 --bits 3 --group-size -1"
  "gptq-pc-w3|--method gptq --bits 3 --group-size -1"
)

for m in $models; do
  case $m in
    small) model=$small; data=$small_data; partial=() ;;
    # Only the demo model needs it (MLP width 704); elsewhere it would also make --format auto
    # pick GPTQ and its zero >= 1, which is not what the bare defaults write.
    demo) model=models/demo/tiny-llama-bytes; data=models/demo/data; partial=(--partial-groups) ;;
    *) echo "unknown model $m" >&2; exit 2 ;;
  esac
  [ -d "$model" ] || { echo "skipping $model (not found)" >&2; continue; }
  for run in "${RUNS[@]}"; do
    name=${run%%|*}
    flags=${run#*|}
    if [ -n "${PTQ_QT_RUNS:-}" ] && [[ " $PTQ_QT_RUNS " != *" $name "* ]]; then continue; fi
    grep -q "\"run\":\"$name\",\"model_name\":\"$m\"" "$out" 2>/dev/null && continue  # resumable
    [[ $flags == *--group-size* ]] || flags="$flags --group-size 128"
    if [[ $name != defaults-* ]]; then  # the defaults these runs were recorded with
      [[ $flags == *--scale-init* || $flags == *--method\ rtn* ]] || flags="$flags --scale-init minmax"
      [[ $flags == *--refine-iters* || $flags == *--method\ rtn* ]] || flags="$flags --refine-iters 0"
      [[ $flags == *--no-value-block* || $flags != *--method\ *boa* ]] || flags="$flags --value-block"
      [[ $flags == *--format* ]] || flags="$flags --format gptq"
    fi
    tmp=$(mktemp -d)
    # shellcheck disable=SC2086
    if "$build/ptq" ${PTQ_QT_THREADS:+--threads $PTQ_QT_THREADS} quantize --model "$model" --calib "$data/calib.txt" --eval "$data/valid.txt" \
        --skip-fp-eval --out "$tmp/q" "${partial[@]}" \
        --samples 128 --seq-len 256 $flags --json 2>"$tmp/log" >"$tmp/json"; then
      sed "s/^{/{\"run\":\"$name\",\"model_name\":\"$m\",/" "$tmp/json" | tee -a "$out"
    else
      echo "run $name on $m failed:" >&2; tail -5 "$tmp/log" >&2
    fi
    rm -rf "$tmp"
  done
done
