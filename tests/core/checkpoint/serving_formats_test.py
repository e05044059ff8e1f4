"""`ptq quantize` checkpoints, read the way their consumers read them.

For each setting (2/3/4/8 bits, symmetric and with zero points, act-order groups and static groups,
per-channel, sharded output) the demo model is quantized with the `ptq` binary; the checkpoint is then
dequantized by tests/core/checkpoint/consumer_reader.py (GPTQModel's and compressed-tensors' unpacking,
transcribed from their source) and compared bit for bit with
  - `ptq dequantize` of the same checkpoint (our reader), always, and
  - `ptq quantize --format dequantized` with the same options, the quantizer's own float32 weights,
    wherever the quantization does not depend on the format (all compressed-tensors settings and
    symmetric GPTQ; asymmetric GPTQ keeps zero points >= 1 for its zero - 1 storage).
compressed-tensors' own pack_to_int32 must reproduce our packed words, and a setting a format cannot
express must be refused before any work, leaving nothing at the output path.

Usage: serving_formats_test.py PTQ_BINARY SOURCE_DIR
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

try:
    import torch
    import consumer_reader as cr
except ImportError as e:  # python3-torch missing
    print(f"skipped: {e}")
    sys.exit(77)

PTQ, SRC = sys.argv[1], sys.argv[2]
DEMO = os.path.join(SRC, "models/demo/tiny-llama-bytes")
CALIB = os.path.join(SRC, "models/demo/data/calib.txt")
FAST = ["--samples", "8", "--seq-len", "64"]

# (name, extra flags, expected format). Group sizes divide every demo layer (256 and 704) unless said.
CASES = [
    ("ct_w2_asym_g64", ["--bits", "2", "--group-size", "64"], "compressed-tensors"),
    ("ct_w3_sym_actorder", ["--bits", "3", "--sym", "--group-size", "64", "--act-order"], "compressed-tensors"),
    ("ct_w3_asym_static", ["--bits", "3", "--group-size", "32", "--act-order", "--static-groups"],
     "compressed-tensors"),
    ("ct_w4_asym_channel", ["--bits", "4", "--group-size", "-1"], "compressed-tensors"),
    ("ct_w8_asym_actorder", ["--bits", "8", "--group-size", "64", "--act-order"], "compressed-tensors"),
    ("ct_w4_sym_sharded", ["--bits", "4", "--sym", "--group-size", "64", "--format", "compressed-tensors",
                           "--max-shard-mib", "1"], "compressed-tensors"),
    ("gptq_w4_sym_actorder", ["--bits", "4", "--sym", "--group-size", "64", "--act-order"], "gptq"),
    ("gptq_w8_sym_channel", ["--bits", "8", "--sym", "--group-size", "-1"], "gptq"),
    ("gptq_w2_sym", ["--bits", "2", "--sym", "--group-size", "32", "--format", "gptq"], "gptq"),
    ("gptq_w3_asym_actorder", ["--bits", "3", "--group-size", "64", "--act-order", "--format", "gptq"], "gptq"),
    ("gptq_w4_asym_sharded", ["--bits", "4", "--group-size", "64", "--format", "gptq", "--max-shard-mib", "1"],
     "gptq"),
    # A shorter last group (704 = 5 x 128 + 64): --format auto keeps GPTQ, the only format holding it.
    ("gptq_w3_partial", ["--bits", "3", "--group-size", "128", "--partial-groups"], "gptq"),
]

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def ptq(*args):
    r = subprocess.run([PTQ, "--log-level", "warn", *args], capture_output=True, text=True)
    return r


def quantize(out, flags, method="gptq"):
    r = ptq("quantize", "--model", DEMO, "--calib", CALIB, "--out", out, "--method", method, "--force",
            *FAST, *flags)
    if r.returncode != 0:
        raise RuntimeError(f"ptq quantize {flags} failed:\n{r.stderr}")
    return r


def weights_of(folder):
    tensors, _ = cr.read_model(folder)
    return {n: t for n, t in tensors.items() if ".layers." in n and n.endswith("_proj.weight")}


def run_case(tmp, name, flags, expected_format):
    ckpt = os.path.join(tmp, name)
    quantize(ckpt, flags)
    consumer, qc, tensors, files = cr.dequantize_model(ckpt)
    method = qc["quant_method"]
    check(method == {"gptq": "gptq", "compressed-tensors": "compressed-tensors"}[expected_format],
          f"{name}: quant_method {method}, expected {expected_format}")
    with open(os.path.join(ckpt, "ptq_report.json")) as f:
        serving = json.load(f).get("serving", {})
    check(serving.get("format") == expected_format, f"{name}: report says format {serving.get('format')}")
    check(len(consumer) == 4 * 7, f"{name}: {len(consumer)} quantized layers, expected 28")
    if "sharded" in name:
        check(len(files) > 1 and os.path.exists(os.path.join(ckpt, "model.safetensors.index.json")),
              f"{name}: expected several shards, got {files}")

    # Our reader, on the same file.
    dense = os.path.join(tmp, name + "_dense")
    r = ptq("dequantize", "--model", ckpt, "--out", dense)
    check(r.returncode == 0, f"{name}: ptq dequantize failed: {r.stderr}")
    ours = weights_of(dense)
    for n, w in consumer.items():
        check(n in ours and torch.equal(w, ours[n]), f"{name}: {n} differs from ptq dequantize")

    # The quantizer's own weights, where the format does not change the quantization.
    sym = "--sym" in flags
    if expected_format == "compressed-tensors" or sym:
        plain = list(flags)
        for option in ("--format", "--max-shard-mib"):
            if option in plain:
                i = plain.index(option)
                del plain[i:i + 2]
        fp = os.path.join(tmp, name + "_fp32")
        quantize(fp, plain + ["--format", "dequantized"])
        reference = weights_of(fp)
        for n, w in consumer.items():
            check(torch.equal(w, reference[n]), f"{name}: {n} differs from the quantizer's weights "
                                                f"(max {float((w - reference[n]).abs().max())})")

    if method == "compressed-tensors":
        args = cr.ct_weights_args(qc)
        check(args["num_bits"] == int(flags[flags.index("--bits") + 1]), f"{name}: num_bits {args['num_bits']}")
        check(args["symmetric"] == sym, f"{name}: symmetric {args['symmetric']}")
        check(qc["ignore"] == ["lm_head"] and qc["format"] == "pack-quantized", f"{name}: config {qc}")
        act_groups = "--act-order" in flags and "--static-groups" not in flags
        for n in consumer:
            prefix = n[:-len(".weight")]
            # compressed-tensors' own packer reproduces our words from the unpacked values.
            shape = torch.Size(tensors[prefix + ".weight_shape"].tolist())
            values = cr.ct_unpack_from_int32(tensors[prefix + ".weight_packed"], args["num_bits"], shape)
            check(torch.equal(cr.ct_pack_to_int32(values, args["num_bits"]), tensors[prefix + ".weight_packed"]),
                  f"{name}: {prefix}.weight_packed is not what pack_to_int32 writes")
            zp_name = prefix + ".weight_zero_point"
            check((zp_name in tensors) == (not sym), f"{name}: {zp_name} present: {zp_name in tensors}")
            if zp_name in tensors:
                zp_shape = (shape[0], tensors[prefix + ".weight_scale"].shape[-1])
                zp = cr.ct_unpack_from_int32(tensors[zp_name], args["num_bits"], zp_shape, packed_dim=0)
                check(torch.equal(cr.ct_pack_to_int32(zp, args["num_bits"], packed_dim=0), tensors[zp_name]),
                      f"{name}: {zp_name} is not what pack_to_int32 writes")
            check((prefix + ".weight_g_idx" in tensors) == act_groups, f"{name}: g_idx presence")
        check(args["actorder"] == ("group" if act_groups else "weight" if "--act-order" in flags else None),
              f"{name}: actorder {args['actorder']}")


def refusals(tmp):
    # compressed-tensors cannot hold a shorter last group: refused up front, nothing written.
    out = os.path.join(tmp, "refused")
    r = ptq("quantize", "--model", DEMO, "--calib", CALIB, "--out", out, "--bits", "3", "--group-size", "128",
            "--partial-groups", "--format", "compressed-tensors", *FAST)
    check(r.returncode != 0 and "cannot express a shorter last group" in r.stderr and "--format gptq" in r.stderr,
          f"partial groups in compressed-tensors: rc {r.returncode}, {r.stderr.strip()}")
    leftovers = [p for p in os.listdir(tmp) if p.startswith("refused")]
    check(leftovers == [], f"a refused job left {leftovers}")


def main():
    tmp = tempfile.mkdtemp(prefix="ptq_serving_formats_")
    try:
        for name, flags, fmt in CASES:
            print("case", name, flush=True)
            run_case(tmp, name, flags, fmt)
        refusals(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print(f"{len(failures)} failures")
        return 1
    print("all cases agree")
    return 0


if __name__ == "__main__":
    sys.exit(main())
