#!/usr/bin/env python3
"""Runs the authors' released TurboBoA code (SamsungLabs/TurboBoA, exported by
bench/authors_turboboa.sh into an ignored folder; CC BY-NC, so none of it lives in this repository)
on one of our byte-level Llama models, with our calibration windows and our perplexity, and prints
one JSON line with the wall and CPU seconds of each phase.

What stands in for Hugging Face here (transformers cannot be installed on this machine):
- the model is a minimal float32 PyTorch Llama written for this driver from our C++ forward
  (core/model/llama_block.cc, rope.cc): the module names, call signatures and outputs their
  quantize.py touches (LlamaForCausalLM.model.{embed_tokens,layers,norm,rotary_emb}, lm_head, config,
  self_attn.{q,k,v,o}_proj, self_attn.rot_out_Q/K, the decoder layer's kwargs and its attention
  probabilities with output_attentions=True); it is checked against the model's reference logits;
- their argument parser is used as is, with a stub `transformers` module (it only reads
  transformers.AutoTokenizer, for their own data loaders, which we do not call);
- their code moves a few tensors to "cuda:0" unconditionally (quantize.py's rotary matrix,
  TurboBoA.quant's results); without a GPU those moves are redirected to the CPU.
Calibration is ours (bytes of the text, mt19937_64 window starts, core/model/calibration.cc), and so is
the perplexity (non-overlapping windows, every window scored in full, core/model/perplexity.cc).
"""
import argparse
import json
import os
import resource
import struct
import sys
import time
import types

import torch
from torch import nn


# ---------------------------------------------------------------- calibration and evaluation text

class Mt19937_64:
    """std::mt19937_64 (its output sequence is fixed by the C++ standard)."""
    N, M = 312, 156
    MASK = (1 << 64) - 1

    def __init__(self, seed):
        self.mt = [seed & self.MASK]
        for i in range(1, self.N):
            prev = self.mt[-1]
            self.mt.append((6364136223846793005 * (prev ^ (prev >> 62)) + i) & self.MASK)
        self.index = self.N

    def _twist(self):
        mt = self.mt
        for i in range(self.N):
            x = (mt[i] & 0xFFFFFFFF80000000) | (mt[(i + 1) % self.N] & 0x7FFFFFFF)
            xa = x >> 1
            if x & 1:
                xa ^= 0xB5026F5AA96619E9
            mt[i] = mt[(i + self.M) % self.N] ^ xa
        self.index = 0

    def __call__(self):
        if self.index >= self.N:
            self._twist()
        x = self.mt[self.index]
        self.index += 1
        x ^= (x >> 29) & 0x5555555555555555
        x ^= (x << 17) & 0x71D67FFFEB8C0000
        x ^= (x << 37) & 0xFFF7EEE000000000
        x ^= x >> 43
        return x & self.MASK


def check_mt19937_64():
    # The standard's check value: the 10000th output of a default-constructed (seed 5489) engine.
    rng = Mt19937_64(5489)
    for _ in range(9999):
        rng()
    assert rng() == 9981545732273789042, "mt19937_64 does not match the C++ standard's check value"


def read_tokens(path):
    with open(path, "rb") as f:
        return list(f.read())  # byte vocabulary: token id = byte value


def calibration_windows(tokens, num_windows, seq_len, seed):
    """Our SampleCalibrationWindows: start = rng() % (n - seq_len + 1), one draw per window."""
    rng = Mt19937_64(seed)
    starts = len(tokens) - seq_len + 1
    out = []
    for _ in range(num_windows):
        s = rng() % starts
        out.append(torch.tensor(tokens[s:s + seq_len], dtype=torch.long))
    return torch.stack(out)


# ---------------------------------------------------------------- the model

_ST_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        raw = bytearray(data[8 + n + begin:8 + n + end])
        out[name] = torch.frombuffer(raw, dtype=_ST_DTYPES[info["dtype"]]).reshape(info["shape"]).float()
    return out


class RmsNorm(nn.Module):
    def __init__(self, size, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


class RotaryTable(nn.Module):
    """cos/sin of the "rotate half" RoPE, [batch, tokens, head_dim], as rotary_emb(x, position_ids)."""

    def __init__(self, head_dim, theta):
        super().__init__()
        self.inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2).float() / head_dim)

    def forward(self, x, position_ids):
        freqs = position_ids.float()[..., None] * self.inv_freq
        angles = torch.cat([freqs, freqs], -1)
        return angles.cos().to(x.dtype), angles.sin().to(x.dtype)


def rotate(x, cos, sin):
    half = x.shape[-1] // 2
    turned = torch.cat([-x[..., half:], x[..., :half]], -1)
    return x * cos[:, None] + turned * sin[:, None]


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        self.q_proj = nn.Linear(c.hidden_size, self.heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(c.hidden_size, self.kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(c.hidden_size, self.kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.heads * self.head_dim, c.hidden_size, bias=False)
        # Their statistics hook these two for the rotated queries and keys ([batch, heads, tokens, d]).
        self.rot_out_Q = nn.Identity()
        self.rot_out_K = nn.Identity()

    def forward(self, x, position_embeddings, attention_mask):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = position_embeddings
        q = self.rot_out_Q(rotate(q, cos, sin))
        k = self.rot_out_K(rotate(k, cos, sin))
        rep = self.heads // self.kv_heads  # query head h reads key/value head h // rep
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
        scores = (q @ k.transpose(-1, -2)) * (1.0 / self.head_dim ** 0.5)
        probs = torch.softmax(scores.masked_fill(attention_mask[:t, :t], float("-inf")), -1)
        out = (probs @ v).transpose(1, 2).reshape(b, t, self.heads * self.head_dim)
        return self.o_proj(out), probs


class Mlp(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gate_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.up_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.down_proj = nn.Linear(c.intermediate_size, c.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.self_attn = Attention(c)
        self.mlp = Mlp(c)
        self.input_layernorm = RmsNorm(c.hidden_size, c.rms_norm_eps)
        self.post_attention_layernorm = RmsNorm(c.hidden_size, c.rms_norm_eps)

    def forward(self, hidden_states, attention_mask=None, position_ids=None, position_embeddings=None,
                output_attentions=False, **unused):
        attn, probs = self.self_attn(self.input_layernorm(hidden_states), position_embeddings, attention_mask)
        h = hidden_states + attn
        out = h + self.mlp(self.post_attention_layernorm(h))
        return (out, probs) if output_attentions else (out,)


class LlamaModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(c) for _ in range(c.num_hidden_layers))
        self.norm = RmsNorm(c.hidden_size, c.rms_norm_eps)
        self.rotary_emb = RotaryTable(c.head_dim, c.rope_theta)

    def forward(self, input_ids):
        t = input_ids.shape[-1]
        h = self.embed_tokens(input_ids)
        position_ids = torch.arange(t)[None]
        kwargs = {
            "attention_mask": torch.ones(t, t, dtype=torch.bool).triu(1),  # True: masked
            "position_ids": position_ids,
            "position_embeddings": self.rotary_emb(h, position_ids),
            "output_attentions": False,
        }
        for layer in self.layers:  # their Catcher stands in for layer 0 and keeps these kwargs
            h = layer(h, **kwargs)[0]
        return self.norm(h)


class LlamaForCausalLM(nn.Module):  # the class name is what their model_utils dispatches on
    def __init__(self, c):
        super().__init__()
        self.config = c
        self.model = LlamaModel(c)
        self.lm_head = nn.Linear(c.hidden_size, c.vocab_size, bias=False)

    def forward(self, input_ids):
        return self.lm_head(self.model(input_ids))


def load_model(folder):
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    c = types.SimpleNamespace(**cfg)
    c.head_dim = cfg.get("head_dim", c.hidden_size // c.num_attention_heads)
    c.rope_theta = cfg.get("rope_theta", 10000.0)
    c.use_cache = False
    if cfg.get("rope_scaling") or cfg.get("tie_word_embeddings"):
        raise SystemExit(f"{folder}: rope_scaling / tied embeddings are not supported by this driver")
    model = LlamaForCausalLM(c)
    weights = read_safetensors(os.path.join(folder, "model.safetensors"))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    missing = [m for m in missing if not m.endswith("inv_freq")]
    if missing or unexpected:
        raise SystemExit(f"{folder}: weights do not match the model: missing {missing}, unexpected {unexpected}")
    return model.eval()


@torch.no_grad()
def check_reference_logits(model, folder):
    path = os.path.join(folder, "reference-logits.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        ref = json.load(f)
    ids = torch.tensor(ref["input_bytes"], dtype=torch.long)[None]
    err = (model(ids)[0] - torch.tensor(ref["logits"])).abs().max().item()
    if err > 1e-3:
        raise SystemExit(f"the driver's forward is off the reference logits by {err}")
    return err


@torch.no_grad()
def perplexity(model, tokens, seq_len, batch=16):
    """Ours: exp(mean next-token NLL) over all non-overlapping windows, each scored in full."""
    n = len(tokens) // seq_len
    ids = torch.tensor(tokens[:n * seq_len], dtype=torch.long).view(n, seq_len)
    nll = 0.0
    for b0 in range(0, n, batch):
        x = ids[b0:b0 + batch]
        logp = torch.log_softmax(model(x)[:, :-1], -1)
        nll -= logp.gather(-1, x[:, 1:, None]).double().sum().item()
    return float(torch.tensor(nll / (n * (seq_len - 1))).exp()), n


# ---------------------------------------------------------------- their code, timed

class Clock:
    """Wall seconds spent inside wrapped functions, per phase (outermost call only)."""

    def __init__(self):
        self.seconds = {}
        self.depth = 0

    def wrap(self, phase, fn):
        def timed(*args, **kwargs):
            if self.depth:
                return fn(*args, **kwargs)
            self.depth += 1
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - t0
                self.depth -= 1
        return timed


def redirect_cuda_to_cpu():
    """Their code calls .cuda() / .to(device="cuda:0") unconditionally; without a GPU these stay here."""
    original_to = torch.Tensor.to

    def is_cuda(d):
        return (isinstance(d, str) and d.startswith("cuda")) or (isinstance(d, torch.device) and d.type == "cuda")

    def to(self, *args, **kwargs):
        args = tuple("cpu" if is_cuda(a) else a for a in args)
        if is_cuda(kwargs.get("device")):
            kwargs["device"] = "cpu"
        return original_to(self, *args, **kwargs)

    torch.Tensor.to = to
    torch.Tensor.cuda = lambda self, *a, **k: self


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--authors", required=True, help="their exported source tree")
    p.add_argument("--commit", default="", help="their commit, recorded in the JSON")
    p.add_argument("--model", required=True)
    p.add_argument("--calib", required=True)
    p.add_argument("--valid", default="", help="evaluation text (empty: no evaluation)")
    p.add_argument("--samples", type=int, default=128)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bits", type=int, default=2)
    p.add_argument("--group-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--fp-eval", action="store_true", help="also measure the full-precision model")
    p.add_argument("--work", default="/tmp", help="their cache_dir (created, left empty)")
    p.add_argument("--their-args", default="", help="more flags for their parser, e.g. --act_order_row")
    a = p.parse_args()

    torch.set_num_threads(a.threads)
    t_start, cpu_start = time.perf_counter(), cpu_seconds()
    check_mt19937_64()
    model = load_model(a.model)
    logit_err = check_reference_logits(model, a.model)
    model.seqlen = a.seq_len
    calib = calibration_windows(read_tokens(a.calib), a.samples, a.seq_len, a.seed)
    calib_data = [(calib[i:i + 1], None) for i in range(a.samples)]  # their loaders yield (ids[1, L], target)
    valid = read_tokens(a.valid) if a.valid else None
    result = {"impl": "authors", "commit": a.commit, "model": a.model, "threads": a.threads,
              "bits": a.bits, "group_size": a.group_size, "samples": a.samples, "seq_len": a.seq_len,
              "seed": a.seed, "reference_logits_max_err": logit_err,
              "setup_seconds": time.perf_counter() - t_start}

    if a.fp_eval and valid is not None:
        t0 = time.perf_counter()
        result["perplexity_fp"], _ = perplexity(model, valid, a.seq_len)
        result["fp_eval_seconds"] = time.perf_counter() - t0

    # Their code, imported from the exported tree; their argument parser with the README's TurboBoA
    # command line, our group size and calibration size.
    sys.path.insert(0, a.authors)
    sys.modules["transformers"] = types.SimpleNamespace(AutoTokenizer=None)
    if not torch.cuda.is_available():
        redirect_cuda_to_cpu()
    import quantize as their_quantize
    import quantizers.minmax as their_minmax
    import quantizers.turboboa as their_turboboa
    import utils.hessian_utils as their_hessian
    from utils.process_args import get_turboboa_arguments, get_turboboa_weight_quant_infos
    sys.argv = ["main.py", "--llm_path", a.model, "--cache_dir", a.work, "--seqlen", str(a.seq_len),
                "--nsamples", str(a.samples), "--seed", str(a.seed), "--w_bits", str(a.bits),
                "--group_size", str(a.group_size),
                "--block_v", "--n_quant_rows", "16", "--consider_dX", "--adaptive_qparam", "--refine_qparam",
                *a.their_args.split()]
    args = get_turboboa_arguments()
    qconfigs, opts, hyperparams = get_turboboa_weight_quant_infos(args)
    result["their_options"] = {**qconfigs, **opts, **hyperparams}

    clock = Clock()
    their_quantize.cache_first_transformer_input = clock.wrap(
        "forward_embed", their_quantize.cache_first_transformer_input)
    their_quantize.compute_Hessian = clock.wrap("forward_statistics", their_quantize.compute_Hessian)
    stats_clock = Clock()  # covariance products inside compute_Hessian's forwards
    their_hessian.compute_cov = stats_clock.wrap("statistics", their_hessian.compute_cov)
    their_hessian.preprocess = stats_clock.wrap("statistics", their_hessian.preprocess)
    their_turboboa.TurboBoA.quant = clock.wrap("quantize", their_turboboa.TurboBoA.quant)
    their_minmax.MinMaxQuantizer.find_params = clock.wrap("quantize", their_minmax.MinMaxQuantizer.find_params)

    with open(os.devnull, "w") as quiet:  # their per-layer prints
        stdout, sys.stdout = sys.stdout, quiet
        try:
            t0, c0 = time.perf_counter(), cpu_seconds()
            their_quantize.turboboa_fwrd(model, calib_data, qconfigs, opts, hyperparams, args)
            quant_wall, quant_cpu = time.perf_counter() - t0, cpu_seconds() - c0
        finally:
            sys.stdout = stdout

    s = clock.seconds
    statistics = stats_clock.seconds.get("statistics", 0.0)
    forward_stats = s.get("forward_statistics", 0.0)
    result["phase_seconds"] = {
        "forward": s.get("forward_embed", 0.0) + (forward_stats - statistics)
                   + (quant_wall - sum(s.values())),  # the rest: each block's forward for the next
        "statistics": statistics,
        "quantize": s.get("quantize", 0.0),
    }
    result["seconds"] = quant_wall  # calibration forward + statistics + quantization, evaluation aside
    result["cpu_seconds"] = quant_cpu

    if valid is not None:
        t0, c0 = time.perf_counter(), cpu_seconds()
        result["perplexity_quant"], result["eval_windows"] = perplexity(model, valid, a.seq_len)
        result["eval_seconds"], result["eval_cpu_seconds"] = time.perf_counter() - t0, cpu_seconds() - c0
    result["process_cpu_seconds"] = cpu_seconds() - cpu_start
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
