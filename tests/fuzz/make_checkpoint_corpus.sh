#!/usr/bin/env bash
# Writes the seed corpus of checkpoint_reader_fuzz: a tiny random Llama (hidden 16, 2 heads over 1 KV
# head, MLP 32, vocab 256, one block) as one safetensors file and as an index with two shards, and
# the GPTQ checkpoints `ptq quantize` writes from it (W4 and W8, g16; W4 act-order). Each folder is
# packed as the target reads it: "%%%% NAME" lines, each followed by the file's bytes.
# Usage: tests/fuzz/make_checkpoint_corpus.sh [BUILD_DIR]   (needs the built ptq)
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
corpus=tests/fuzz/corpus/checkpoint_reader
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$corpus" "$tmp/fp" "$tmp/sharded"
python3 - "$tmp" <<'PY'
import json, random, struct, sys
tmp = sys.argv[1]
random.seed(0)
h, heads, kv, hd, inter, vocab = 16, 2, 1, 8, 32, 256
config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
          "vocab_size": vocab, "hidden_size": h, "intermediate_size": inter, "num_hidden_layers": 1,
          "num_attention_heads": heads, "num_key_value_heads": kv, "max_position_embeddings": 64,
          "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False,
          "torch_dtype": "float16"}
shapes = {"model.embed_tokens.weight": [vocab, h], "model.norm.weight": [h], "lm_head.weight": [vocab, h],
          "model.layers.0.input_layernorm.weight": [h], "model.layers.0.post_attention_layernorm.weight": [h],
          "model.layers.0.self_attn.q_proj.weight": [heads * hd, h],
          "model.layers.0.self_attn.k_proj.weight": [kv * hd, h],
          "model.layers.0.self_attn.v_proj.weight": [kv * hd, h],
          "model.layers.0.self_attn.o_proj.weight": [h, heads * hd],
          "model.layers.0.mlp.gate_proj.weight": [inter, h], "model.layers.0.mlp.up_proj.weight": [inter, h],
          "model.layers.0.mlp.down_proj.weight": [h, inter]}
def data(name, shape):
    n = 1
    for d in shape: n *= d
    vals = [1.0 + random.gauss(0, 0.05) if name.endswith("norm.weight") else random.gauss(0, 0.3) for _ in range(n)]
    return struct.pack("<%de" % n, *vals)
def write(path, names):
    header, blobs, at = {}, [], 0
    for name in names:
        b = data(name, shapes[name])
        header[name] = {"dtype": "F16", "shape": shapes[name], "data_offsets": [at, at + len(b)]}
        blobs.append(b); at += len(b)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))
names = list(shapes)
for d in ("fp", "sharded"):
    json.dump(config, open(f"{tmp}/{d}/config.json", "w"))
write(f"{tmp}/fp/model.safetensors", names)
half = len(names) // 2
shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
for shard, part in shards.items():
    write(f"{tmp}/sharded/{shard}", part)
json.dump({"metadata": {}, "weight_map": {n: s for s, part in shards.items() for n in part}},
          open(f"{tmp}/sharded/model.safetensors.index.json", "w"))
PY
head -c 4000 models/demo/data/calib.txt > "$tmp/calib.txt"
for q in "w4|--bits 4" "w8|--bits 8" "w4-actorder|--bits 4 --act-order"; do
  name=${q%%|*}
  # shellcheck disable=SC2086
  "$build/ptq" quantize --format gptq --model "$tmp/fp" --calib "$tmp/calib.txt" --out "$tmp/gptq-$name" \
    --samples 4 --seq-len 32 --group-size 16 ${q#*|} >/dev/null 2>&1
done
pack() {  # folder -> one corpus file
  local dir=$1 f sep=''
  for f in config.json model.safetensors model.safetensors.index.json model-00001-of-00002.safetensors \
           model-00002-of-00002.safetensors; do
    [ -f "$dir/$f" ] || continue
    printf '%s%%%%%%%% %s\n' "$sep" "$f"
    cat "$dir/$f"
    sep=$'\n'
  done
}
for dir in fp sharded gptq-w4 gptq-w8 gptq-w4-actorder; do
  pack "$tmp/$dir" > "$corpus/$dir"
done
ls -l "$corpus"
