#!/usr/bin/env python3
"""Each supported model family against an independent forward written from Hugging Face
transformers' modeling code (modeling_llama, modeling_mistral, modeling_qwen2, modeling_qwen3 and
masking_utils), not from ours.

For Llama 3 (llama3 RoPE scaling, tied embeddings), Mistral (sliding window on every layer), Qwen2
(q/k/v biases, use_sliding_window from max_window_layers on) and Qwen3 (per-head q/k RMSNorm,
head_dim != hidden / heads, sliding window through layer_types) the test writes a random-weight
model of that layout (config.json + model.safetensors) and checks:

1. `ptq eval` gives the perplexity the reference forward gives (relative 2e-5), and the reference
   with the family's feature left out (no window, no q/k norm, no biases) differs by far more, so
   the comparison would catch a forward that ignores it.
2. Round trip: `ptq quantize` (GPTQ, and BoA for Qwen3) writes a GPTQ checkpoint that keeps the
   family's config and tensor names; `ptq eval` of it reproduces the perplexity the quantizer
   reported; the same job written dequantized gives, through the reference forward, the perplexity
   `ptq eval` measures on it.
3. Configs with a field that changes the computation and is not implemented are refused by name.
4. A model folder with a tokenizer.json: `ptq eval` of a text gives what it gives on the ids Hugging
   Face's tokenizers produced for that text (tests/common/tokenizer_json/expected.json).

Usage: family_reference_test.py PTQ_BINARY
"""
import json
import math
import os
import struct
import subprocess
import sys
import tempfile

try:
    import torch
except ImportError:
    print("skipped: python3-torch is not installed (apt-get install python3-torch)")
    sys.exit(77)

SEQ = 32
WINDOW = 8  # smaller than the window, so the sliding window matters

FAMILIES = {
    "llama3": {
        "model_type": "llama", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256,
        "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": True,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
        "hidden_act": "silu", "attention_bias": False, "torch_dtype": "float32",
    },
    "mistral": {
        "model_type": "mistral", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 1, "vocab_size": 256,
        "rms_norm_eps": 1e-5, "rope_theta": 1000000.0, "sliding_window": WINDOW,
        "hidden_act": "silu", "tie_word_embeddings": False, "torch_dtype": "float32",
    },
    "qwen2": {
        "model_type": "qwen2", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "use_sliding_window": True,
        "sliding_window": WINDOW, "max_window_layers": 1, "hidden_act": "silu",
        "tie_word_embeddings": False, "torch_dtype": "float32",
    },
    "qwen3": {
        "model_type": "qwen3", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32, "vocab_size": 256,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "attention_bias": False,
        "use_sliding_window": True, "sliding_window": WINDOW, "max_window_layers": 2,
        "layer_types": ["sliding_attention", "full_attention"], "hidden_act": "silu",
        "tie_word_embeddings": True, "torch_dtype": "float32",
    },
}


# ---- safetensors, written and read by hand (the format is a JSON header and raw bytes) ----------

DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.int32: "I32"}
TORCH_OF = {"F32": torch.float32, "F16": torch.float16, "I32": torch.int32, "BF16": torch.bfloat16}


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        data = t.numpy().tobytes()
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        a, b = meta["data_offsets"]
        dtype = TORCH_OF[meta["dtype"]]
        out[name] = torch.frombuffer(bytearray(data[a:b]), dtype=dtype).reshape(meta["shape"])
    return out


# ---- the reference forward, from transformers' modeling code ------------------------------------

def layer_types(cfg):
    """configuration_qwen2/qwen3 __post_init__; Mistral: every layer when sliding_window is set."""
    n = cfg["num_hidden_layers"]
    if cfg["model_type"] == "mistral":
        return ["sliding_attention" if cfg.get("sliding_window") else "full_attention"] * n
    if cfg["model_type"] in ("qwen2", "qwen3"):
        window = cfg.get("sliding_window") if cfg.get("use_sliding_window") else None
        if cfg.get("layer_types") is not None:
            return cfg["layer_types"]
        return ["sliding_attention" if window is not None and i >= cfg.get("max_window_layers", 28)
                else "full_attention" for i in range(n)]
    return ["full_attention"] * n


def inv_freq(cfg, dim, drop=None):
    """modeling_rope_utils: default, linear and llama3 rope_type."""
    base = cfg.get("rope_theta", 10000.0)
    freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    rs = (cfg.get("rope_scaling") or {}) if drop != "rope_scaling" else {}
    kind = rs.get("rope_type", rs.get("type", "default"))
    if kind == "linear":
        freq = freq / rs["factor"]
    elif kind == "llama3":
        factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
        old = rs["original_max_position_embeddings"]
        low_wavelen, high_wavelen = old / low, old / high
        wavelen = 2 * math.pi / freq
        scaled = torch.where(wavelen > low_wavelen, freq / factor, freq)
        smooth = (old / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
        freq = torch.where(medium, smoothed, scaled)
    return freq


def rms_norm(x, weight, eps):
    variance = x.float().pow(2).mean(-1, keepdim=True)
    return weight * (x * torch.rsqrt(variance + eps))


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def reference_logits(cfg, w, ids, drop=None):
    """ids: [batch, T]. drop: the family feature to leave out ("window", "qk_norm", "bias",
    "rope_scaling")."""
    d, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    kv = cfg.get("num_key_value_heads", heads)
    hd = cfg.get("head_dim") or d // heads
    eps = cfg["rms_norm_eps"]
    b, t = ids.shape
    pos = torch.arange(t).float()
    freqs = torch.outer(pos, inv_freq(cfg, hd, drop))
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos(), emb.sin()
    types = layer_types(cfg)
    q_idx, kv_idx = torch.arange(t)[:, None], torch.arange(t)[None, :]
    h = w["model.embed_tokens.weight"][ids]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."

        def proj(name, x):
            bias = w.get(p + name + ".bias") if drop != "bias" else None
            return torch.nn.functional.linear(x, w[p + name + ".weight"], bias)

        x = rms_norm(h, w[p + "input_layernorm.weight"], eps)
        q = proj("self_attn.q_proj", x).view(b, t, heads, hd)
        k = proj("self_attn.k_proj", x).view(b, t, kv, hd)
        v = proj("self_attn.v_proj", x).view(b, t, kv, hd).transpose(1, 2)
        if cfg["model_type"] == "qwen3" and drop != "qk_norm":
            q = rms_norm(q, w[p + "self_attn.q_norm.weight"], eps)
            k = rms_norm(k, w[p + "self_attn.k_norm.weight"], eps)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(heads // kv, dim=1)
        v = v.repeat_interleave(heads // kv, dim=1)
        allowed = kv_idx <= q_idx  # masking_utils.causal_mask_function
        if types[i] == "sliding_attention" and drop != "window":
            allowed = allowed & (kv_idx > q_idx - cfg["sliding_window"])  # sliding_window_overlay
        scores = torch.matmul(q, k.transpose(2, 3)) * hd ** -0.5
        scores = scores + torch.where(allowed, 0.0, torch.finfo(torch.float32).min)
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32)
        attn = torch.matmul(probs, v).transpose(1, 2).reshape(b, t, heads * hd)
        h = h + proj("self_attn.o_proj", attn)
        y = rms_norm(h, w[p + "post_attention_layernorm.weight"], eps)
        act = torch.nn.functional.silu(proj("mlp.gate_proj", y)) * proj("mlp.up_proj", y)
        h = h + proj("mlp.down_proj", act)
    h = rms_norm(h, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") else w["lm_head.weight"]
    return torch.nn.functional.linear(h, head)


def reference_perplexity(cfg, w, tokens, drop=None):
    """ptq eval's definition: non-overlapping windows of SEQ tokens, each scored in full."""
    n = len(tokens) // SEQ
    ids = torch.tensor(tokens[: n * SEQ], dtype=torch.int64).view(n, SEQ)
    with torch.no_grad():
        logp = torch.log_softmax(reference_logits(cfg, w, ids, drop)[:, :-1].double(), -1)
    nll = -logp.gather(-1, ids[:, 1:, None]).mean().item()
    return math.exp(nll)


# ---- models -------------------------------------------------------------------------------------

def random_model(cfg, seed):
    g = torch.Generator().manual_seed(seed)
    d, ff, heads = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_attention_heads"]
    kv = cfg.get("num_key_value_heads", heads)
    hd = cfg.get("head_dim") or d // heads

    def r(*shape, scale=0.2):
        return torch.randn(*shape, generator=g) * scale

    def gain(n):
        return 1 + r(n, scale=0.3)

    w = {"model.embed_tokens.weight": r(cfg["vocab_size"], d, scale=0.5),
         "model.norm.weight": gain(d)}
    if not cfg.get("tie_word_embeddings"):
        w["lm_head.weight"] = r(cfg["vocab_size"], d)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = gain(d)
        w[p + "post_attention_layernorm.weight"] = gain(d)
        # Large enough query/key weights that attention is peaked: the window then matters.
        w[p + "self_attn.q_proj.weight"] = r(heads * hd, d, scale=0.5)
        w[p + "self_attn.k_proj.weight"] = r(kv * hd, d, scale=0.5)
        w[p + "self_attn.v_proj.weight"] = r(kv * hd, d)
        w[p + "self_attn.o_proj.weight"] = r(d, heads * hd)
        w[p + "mlp.gate_proj.weight"] = r(ff, d)
        w[p + "mlp.up_proj.weight"] = r(ff, d)
        w[p + "mlp.down_proj.weight"] = r(d, ff)
        if cfg["model_type"] == "qwen2":
            for name, n in (("q", heads * hd), ("k", kv * hd), ("v", kv * hd)):
                w[p + f"self_attn.{name}_proj.bias"] = r(n, scale=0.5)
        if cfg["model_type"] == "qwen3":
            w[p + "self_attn.q_norm.weight"] = gain(hd) * 2
            w[p + "self_attn.k_norm.weight"] = gain(hd) * 2
    return w


def write_model(folder, cfg, w):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(dict(cfg, architectures=["X"]), f, indent=2)
    write_safetensors(os.path.join(folder, "model.safetensors"), w)


def run(*args, check=True):
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, OMP_WAIT_POLICY="PASSIVE"))
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def ptq_eval(ptq, model, ids_file):
    r = run(ptq, "eval", "--model", model, "--text", ids_file, "--seq-len", str(SEQ), "--json")
    return json.loads(r.stdout.strip().splitlines()[-1])["perplexity"]


FEATURE = {"llama3": "rope_scaling", "mistral": "window", "qwen2": "window", "qwen3": "qk_norm"}
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def close(a, b, rel):
    return abs(a - b) <= rel * abs(b)


def family(ptq, tmp, name, cfg, tokens, ids_file):
    w = random_model(cfg, seed=len(name))
    folder = os.path.join(tmp, name)
    write_model(folder, cfg, w)
    ref = reference_perplexity(cfg, w, tokens)
    got = ptq_eval(ptq, folder, ids_file)
    check(close(got, ref, 2e-5), f"{name}: ptq eval {got:.6f} = reference {ref:.6f}")
    for drop in [FEATURE.get(name)] + (["window"] if name == "qwen3" else []) + \
            (["bias"] if name == "qwen2" else []):
        if drop is None:
            continue
        without = reference_perplexity(cfg, w, tokens, drop)
        check(not close(without, ref, 2e-3),
              f"{name}: the reference without {drop} differs ({without:.4f} vs {ref:.4f})")

    # Round trip: quantize -> checkpoint -> eval.
    methods = ["gptq", "boa"] if name == "qwen3" else ["gptq"]
    for method in methods:
        out = os.path.join(tmp, f"{name}-{method}")
        deq = os.path.join(tmp, f"{name}-{method}-deq")
        common = [ptq, "quantize", "--model", folder, "--calib", ids_file, "--method", method,
                  "--bits", "4", "--group-size", "32", "--samples", "8", "--seq-len", str(SEQ),
                  "--eval", ids_file, "--json"]
        report = json.loads(run(*common, "--out", out).stdout.strip().splitlines()[-1])
        with open(os.path.join(out, "config.json")) as f:
            saved = json.load(f)
        kept = all(saved.get(k) == v for k, v in cfg.items())
        check(kept and "quantization_config" in saved,
              f"{name}/{method}: checkpoint config keeps the family's fields")
        with open(os.path.join(out, "model.safetensors"), "rb") as f:
            names = set(json.loads(f.read(struct.unpack("<Q", f.read(8))[0])))
        expected = {n for n in w if not n.endswith("_proj.weight")}
        # --format auto: GPTQ's qweight, or compressed-tensors' weight_packed (asymmetric 4-bit).
        packed = {"gptq": ".qweight", "compressed-tensors": ".weight_packed"}[
            saved["quantization_config"]["quant_method"]]
        expected |= {n.replace(".weight", packed) for n in w if n.endswith("_proj.weight")}
        check(expected <= names, f"{name}/{method}: checkpoint keeps the family's tensor names "
                                 f"(missing: {sorted(expected - names)[:4]})")
        after = ptq_eval(ptq, out, ids_file)
        check(close(after, report["perplexity_quant"], 1e-6),
              f"{name}/{method}: eval of the checkpoint {after:.6f} = quantize's report "
              f"{report['perplexity_quant']:.6f}")
        check(close(report["perplexity_fp"], ref, 2e-5),
              f"{name}/{method}: quantize's full-precision perplexity = reference")
        run(*common, "--format", "dequantized", "--out", deq)
        wq = read_safetensors(os.path.join(deq, "model.safetensors"))
        wq = {k: v.float() for k, v in wq.items()}
        ref_q = reference_perplexity(cfg, wq, tokens)
        got_q = ptq_eval(ptq, deq, ids_file)
        check(close(got_q, ref_q, 2e-5),
              f"{name}/{method}: dequantized checkpoint, ptq eval {got_q:.6f} = reference {ref_q:.6f}")
        check(close(got_q, after, 1e-3),
              f"{name}/{method}: dequantized and GPTQ checkpoints agree ({got_q:.5f}, {after:.5f})")


REFUSED = [
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "yarn"),
    ({"attn_logit_softcapping": 50.0}, "attn_logit_softcapping"),
    ({"final_logit_softcapping": 30.0}, "final_logit_softcapping"),
    ({"num_local_experts": 8}, "num_local_experts"),
    ({"num_experts": 8}, "num_experts"),
    ({"mlp_bias": True}, "mlp_bias"),
    ({"attention_bias": True}, "attention_bias"),
    ({"partial_rotary_factor": 0.5}, "partial_rotary_factor"),
    ({"model_type": "qwen2", "use_sliding_window": True, "sliding_window": 4,
      "layer_types": ["chunked_attention", "full_attention"]}, "layer_types"),
]


def refusals(ptq, tmp, tokens, ids_file):
    base = FAMILIES["mistral"]
    w = random_model(base, seed=1)
    for i, (change, words) in enumerate(REFUSED):
        folder = os.path.join(tmp, f"refused{i}")
        write_model(folder, dict(base, **change), w)
        r = run(ptq, "eval", "--model", folder, "--text", ids_file, "--seq-len", str(SEQ),
                check=False)
        check(r.returncode != 0 and words in r.stderr + r.stdout,
              f"refused: {change} names {words!r}")
    # A block tensor the forward would not read (a fused projection, attention sinks) is refused.
    for extra in ("self_attn.qkv_proj.weight", "self_attn.sinks"):
        folder = os.path.join(tmp, "extra-" + extra)
        w2 = dict(w)
        w2["model.layers.0." + extra] = torch.zeros(4)
        write_model(folder, base, w2)
        r = run(ptq, "eval", "--model", folder, "--text", ids_file, "--seq-len", str(SEQ),
                check=False)
        check(r.returncode != 0 and extra in r.stderr + r.stdout, f"refused: tensor {extra}")


def tokenizer_json(ptq, tmp):
    """A Qwen3 folder with a tokenizer.json (the fixture's Qwen2-layout one, as Qwen3 ships):
    `ptq eval` on the text equals `ptq eval` on the ids Hugging Face's tokenizers gave for it."""
    fixture = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "common",
                           "tokenizer_json")
    with open(os.path.join(fixture, "texts.json"), encoding="utf-8") as f:
        texts = json.load(f)
    with open(os.path.join(fixture, "expected.json"), encoding="utf-8") as f:
        cases = json.load(f)["cases"]
    text_index = max(range(len(texts)), key=lambda i: len(texts[i]))
    ids = next(c["ids"] for c in cases
               if c["tokenizer"] == "qwen2.tokenizer.json" and c["text"] == text_index)
    cfg = dict(FAMILIES["qwen3"], vocab_size=max(ids) + 64)
    folder = os.path.join(tmp, "qwen3-tokenizer")
    write_model(folder, cfg, random_model(cfg, seed=3))
    with open(os.path.join(fixture, "qwen2.tokenizer.json"), "rb") as src, \
            open(os.path.join(folder, "tokenizer.json"), "wb") as dst:
        dst.write(src.read())
    text_file = os.path.join(tmp, "text.txt")
    with open(text_file, "w", encoding="utf-8") as f:
        f.write(texts[text_index])
    ids_file = os.path.join(tmp, "reference.ids")
    with open(ids_file, "w") as f:
        f.write(" ".join(map(str, ids)) + "\n")
    from_text, from_ids = ptq_eval(ptq, folder, text_file), ptq_eval(ptq, folder, ids_file)
    check(from_text == from_ids,
          f"tokenizer.json: eval of the text {from_text:.6f} = eval of the reference ids {from_ids:.6f}")


def main():
    ptq = sys.argv[1]
    only = sys.argv[2:]  # optional family names
    tmp = tempfile.mkdtemp(prefix="family_reference_test_")
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 256, (8 * SEQ,), generator=g).tolist()
    ids_file = os.path.join(tmp, "text.ids")
    with open(ids_file, "w") as f:
        f.write(" ".join(map(str, tokens)) + "\n")
    for name, cfg in FAMILIES.items():
        if not only or name in only:
            family(ptq, tmp, name, cfg, tokens, ids_file)
    if not only or "refusals" in only:
        refusals(ptq, tmp, tokens, ids_file)
    if not only or "tokenizer" in only:
        tokenizer_json(ptq, tmp)
    if failures:
        print(f"{len(failures)} failed")
        sys.exit(1)
    print("all passed")


if __name__ == "__main__":
    main()
