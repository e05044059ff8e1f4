#!/usr/bin/env bash
# The authors' released TurboBoA code (SamsungLabs/TurboBoA) timed beside ours on the same CPU
# (issue 23): their tree is exported from a local git mirror into bench/.authors/ (ignored: it is
# CC BY-NC and stays out of this repository) and run by bench/authors_turboboa_driver.py (ours) on our
# calibration windows, TurboBoA with their README's settings; then `ptq quantize` with our defaults and
# with the reference-like settings, each configuration in turn under the same load. Evaluation
# (perplexity on valid.txt) is timed apart: the driver times it separately, ours runs `ptq eval` on the
# checkpoint as its own process.
# Usage: bench/authors_turboboa.sh [OUT_JSONL]        (default bench/authors_results.jsonl)
#   PTQ_AUTHORS_GIT   their bare git directory (default /work/.mirror/SamsungLabs+TurboBoA/repo; get it
#                     with `git clone --mirror https://github.com/SamsungLabs/TurboBoA`)
#   PTQ_AUTHORS_COMMIT  (default ea88f93, the commit docs/results.md read line by line)
#   PTQ_AT_BIN        our binary (default build/ptq);  PTQ_AT_MODELS="demo small";  PTQ_AT_THREADS="1 2"
#   PTQ_AT_RUNS="authors ours-default ours-reference"  only these (also: authors-act-order-row, their
#                     code with --act_order_row, the other half of the settings their paper picks from);
#   PTQ_AT_EVAL=0  no evaluation
#   PTQ_AT_SAMPLES / PTQ_AT_SEQ_LEN (default 128 x 256)
# The demo model runs at group size 64: its MLP width 704 is not a multiple of 128 and their code has
# no partial groups (it reshapes the row into whole groups).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/authors_results.jsonl}
git_dir=${PTQ_AUTHORS_GIT:-/work/.mirror/SamsungLabs+TurboBoA/repo}
commit=${PTQ_AUTHORS_COMMIT:-ea88f93}
bin=${PTQ_AT_BIN:-build/ptq}
models=${PTQ_AT_MODELS:-"demo small"}
threads_list=${PTQ_AT_THREADS:-"1 2"}
runs=${PTQ_AT_RUNS:-"authors ours-default ours-reference"}
samples=${PTQ_AT_SAMPLES:-128}
seq_len=${PTQ_AT_SEQ_LEN:-256}
small=${PTQ_SMALL_MODEL:-../shared/models/small-llama-bytes}
small_data=${PTQ_SMALL_DATA:-../shared/data}
python=${PYTHON:-/usr/bin/python3}

authors=bench/.authors/$commit
if [ ! -f "$authors/quantize.py" ]; then
  mkdir -p "$authors"
  git --git-dir="$git_dir" archive "$commit" | tar -x -C "$authors"
fi
full_commit=$(git --git-dir="$git_dir" rev-parse "$commit^{commit}")
machine="$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"

# name | ptq quantize flags
declare -A OURS=(
  [ours-default]="--bits 2"
  [ours-reference]="--method turboboa --scale-init minmax --refine-iters 0 --value-block --bits 2"
)

for model_name in $models; do
  case $model_name in
    demo) model=models/demo/tiny-llama-bytes; data=models/demo/data; group=64 ;;
    small) model=$small; data=$small_data; group=128 ;;
    *) echo "unknown model $model_name (demo or small)" >&2; exit 2 ;;
  esac
  [ -d "$model" ] || { echo "skipping $model (not found)" >&2; continue; }
  for threads in $threads_list; do
    for run in $runs; do
      tmp=$(mktemp -d)
      load=$(cut -d' ' -f1 /proc/loadavg)
      prefix="\"model_name\":\"$model_name\",\"run\":\"$run\",\"load_before\":$load,\"machine\":\"$machine\""
      if [[ $run == authors* ]]; then
        their_args=""
        [ "$run" != authors-act-order-row ] || their_args=--act_order_row
        valid=()
        [ "${PTQ_AT_EVAL:-1}" = 0 ] || valid=(--valid "$data/valid.txt")
        "$python" bench/authors_turboboa_driver.py --authors "$authors" --commit "$full_commit" \
          --model "$model" --calib "$data/calib.txt" "${valid[@]}" --samples "$samples" \
          --seq-len "$seq_len" --bits 2 --group-size "$group" --threads "$threads" --work "$tmp" \
          --their-args="$their_args" > "$tmp/json"
        sed "s|^{|{$prefix,|" "$tmp/json" | tee -a "$out"
      else
        flags=${OURS[$run]}
        # shellcheck disable=SC2086
        /usr/bin/time -f '%U %S' -o "$tmp/cpu" "$bin" --threads "$threads" quantize --model "$model" \
          --calib "$data/calib.txt" --out "$tmp/q" --samples "$samples" --seq-len "$seq_len" \
          --group-size "$group" $flags --json 2>/dev/null > "$tmp/json"
        cpu=$(awk '{print $1 + $2}' "$tmp/cpu")
        evaluation=""
        if [ "${PTQ_AT_EVAL:-1}" != 0 ]; then
          start=$(date +%s.%N)
          /usr/bin/time -f '%U %S' -o "$tmp/eval_cpu" "$bin" --threads "$threads" eval --model "$tmp/q" \
            --text "$data/valid.txt" --seq-len "$seq_len" --json 2>/dev/null > "$tmp/eval"
          end=$(date +%s.%N)
          evaluation=$("$python" -c 'import json, sys
e = json.load(open(sys.argv[1]))
print(",\"perplexity_quant\":%s,\"eval_seconds\":%.3f,\"eval_cpu_seconds\":%s" % (
    e["perplexity"], float(sys.argv[2]), sum(map(float, open(sys.argv[3]).read().split()))))' \
            "$tmp/eval" "$(echo "$end - $start" | bc)" "$tmp/eval_cpu")
        fi
        "$python" -c 'import json, sys
r = json.load(open(sys.argv[1]))
keep = {k: r[k] for k in ("method", "bits", "group_size", "scale_init", "refine_iters", "value_block",
                          "residual_alpha", "joint_rows", "samples", "seq_len", "seed", "threads",
                          "seconds", "phase_seconds", "peak_rss_mib") if k in r}
print(json.dumps(keep)[1:-1])' "$tmp/json" > "$tmp/keep"
        echo "{$prefix,\"impl\":\"ours\",\"binary\":\"$bin\",\"flags\":\"$flags\",\"cpu_seconds\":$cpu$evaluation,$(cat "$tmp/keep")}" \
          | tee -a "$out"
      fi
      rm -rf "$tmp"
    done
  done
done
