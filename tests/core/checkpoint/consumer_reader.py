"""How the consumers read our checkpoints, transcribed from their source rather than from ours.

GPTQ: GPTQModel (transformers v5's GPTQ backend):
  - gptqmodel/utils/model.py, convert_gptq_v1_to_v2_format_module: a classic ("gptq") checkpoint
    stores zero - 1; the loader adds 1 to every packed field (a packed constant for 2/4/8 bits; for
    3-bit int32 words it corrects the logical values, as done here).
  - gptqmodel/nn_modules/qlinear/__init__.py, PackableQuantLinear.post_init / dequantize_weight:
    the shift tables and the 3-bit word-crossing fix-ups, then scales[g_idx] * (weight - zeros[g_idx]).
compressed-tensors "pack-quantized" (what vLLM's and transformers' compressed-tensors paths read):
  - compressed_tensors/compressors/pack_quantized/helpers.py (0.18.0), unpack_from_int32 and
    pack_to_int32: dense packing, element i at bit i * num_bits of its row, values offset by
    2^(num_bits - 1).
  - compressed_tensors/compressors/pack_quantized/base.py, PackedQuantizationCompressor.decompress:
    the zero point unpacked along dim 0 to (out, num_groups), the weight along dim 1.
  - compressed_tensors/quantization/lifecycle/forward_helpers.py, _process_group / _dequantize:
    columns permuted by argsort(g_idx), reshaped into groups, (x_q - zero_point) * scale, permuted back.

One deliberate difference: the consumers multiply in the model's float16; here the same formula runs
in float32, where scale (a float16 value) times an integer below 2^8 is exact, so the comparison with
our float32 weights is exact rather than to float16 rounding.
"""

import json
import math
import os
import struct

import torch

_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}


def read_safetensors(path):
    """{name: tensor} of one safetensors file (the format's spec: u64 header size, JSON header, data)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        dtype = _DTYPES[info["dtype"]]
        raw = bytearray(data[base + begin:base + end])
        t = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        out[name] = t.reshape(info["shape"])
    return out


def read_model(folder):
    """Every tensor of a Hugging Face folder: model.safetensors or the shards its index lists."""
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    tensors = {}
    for name in files:
        tensors.update(read_safetensors(os.path.join(folder, name)))
    return tensors, files


# ---- GPTQ, as GPTQModel reads it ------------------------------------------------------------------

def _gptqmodel_wf(bits):
    # PackableQuantLinear.post_init
    if bits in [2, 4, 8]:
        return torch.tensor(list(range(0, 32, bits)), dtype=torch.int32).unsqueeze(0)
    return torch.tensor(
        [[0, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 0],
         [0, 1, 4, 7, 10, 13, 16, 19, 22, 25, 28, 31],
         [0, 2, 5, 8, 11, 14, 17, 20, 23, 26, 29, 0]], dtype=torch.int32).reshape(1, 3, 12)


def _gptqmodel_unpack_zeros(qzeros, bits, shape):
    wf_unsqueeze_zero = _gptqmodel_wf(bits).unsqueeze(0)
    maxq = 2 ** bits - 1
    if bits in [2, 4, 8]:
        pack_factor = 32 // bits
        zeros = torch.bitwise_right_shift(torch.unsqueeze(qzeros, 2).expand(-1, -1, pack_factor),
                                          wf_unsqueeze_zero)
        return torch.bitwise_and(zeros, maxq).reshape(shape)
    zeros = qzeros.reshape(qzeros.shape[0], qzeros.shape[1] // 3, 3, 1).expand(-1, -1, -1, 12)
    zeros = zeros >> wf_unsqueeze_zero
    zeros[:, :, 0, 10] = (zeros[:, :, 0, 10] & 0x3) | ((zeros[:, :, 1, 0] << 2) & 0x4)
    zeros[:, :, 1, 11] = (zeros[:, :, 1, 11] & 0x1) | ((zeros[:, :, 2, 0] << 1) & 0x6)
    zeros = zeros & 0x7
    return torch.cat([zeros[:, :, 0, :11], zeros[:, :, 1, 1:12], zeros[:, :, 2, 1:11]], dim=2).reshape(shape)


def _gptqmodel_unpack_weight(qweight, bits, out_features):
    wf_unsqueeze_neg_one = _gptqmodel_wf(bits).unsqueeze(-1)
    maxq = 2 ** bits - 1
    if bits in [2, 4, 8]:
        pack_factor = 32 // bits
        weight = torch.bitwise_right_shift(torch.unsqueeze(qweight, 1).expand(-1, pack_factor, -1),
                                           wf_unsqueeze_neg_one)
        weight = torch.bitwise_and(weight, maxq)
        return weight.reshape(-1, out_features)
    weight = qweight.reshape(qweight.shape[0] // 3, 3, 1, qweight.shape[1]).expand(-1, -1, 12, -1)
    weight = (weight >> wf_unsqueeze_neg_one) & 0x7
    weight[:, 0, 10] = (weight[:, 0, 10] & 0x3) | ((weight[:, 1, 0] << 2) & 0x4)
    weight[:, 1, 11] = (weight[:, 1, 11] & 0x1) | ((weight[:, 2, 0] << 1) & 0x6)
    weight = weight & 0x7
    weight = torch.cat([weight[:, 0, :11], weight[:, 1, 1:12], weight[:, 2, 1:11]], dim=1)
    return weight.reshape(-1, out_features)


# convert_gptq_v1_to_v2_format_module's packed constants (int32 words) for 2, 4 and 8 bits.
_V1_TO_V2 = {2: 0b01010101010101010101010101010101, 4: 0b00010001000100010001000100010001,
             8: 0b00000001000000010000000100000001}


def gptq_dequantize(tensors, prefix, qc):
    """W [out, in] of GPTQ layer `prefix` as GPTQModel computes it (in float32, see above)."""
    bits = qc["bits"]
    qweight, qzeros, scales = tensors[prefix + ".qweight"], tensors[prefix + ".qzeros"], tensors[prefix + ".scales"]
    out_features = qweight.shape[1]
    in_features = qweight.shape[0] * 32 // bits
    if qc.get("checkpoint_format", "gptq") == "gptq":  # classic zero - 1 storage: v1 -> v2
        if bits in _V1_TO_V2:
            qzeros = (qzeros.to(torch.int64) + _V1_TO_V2[bits]).to(torch.int32)  # int32 wrap-around add
            zeros = _gptqmodel_unpack_zeros(qzeros, bits, scales.shape)
        else:
            zeros = _gptqmodel_unpack_zeros(qzeros, bits, scales.shape) + 1
    else:
        zeros = _gptqmodel_unpack_zeros(qzeros, bits, scales.shape)
    weight = _gptqmodel_unpack_weight(qweight, bits, out_features)[:in_features, :]
    g_idx = tensors.get(prefix + ".g_idx")
    if g_idx is None:
        group = qc["group_size"] if qc["group_size"] > 0 else in_features
        g_idx = torch.tensor([i // group for i in range(in_features)], dtype=torch.int32)
    g_idx = g_idx.long()
    weights = scales.float()[g_idx] * (weight - zeros[g_idx]).float()
    return weights.t().contiguous()


# ---- compressed-tensors pack-quantized ------------------------------------------------------------

def ct_pack_to_int32(value, num_bits, packed_dim=1):
    """compressed-tensors 0.18.0 pack_to_int32 (2-D case)."""
    assert value.dtype is torch.int8
    offset = 1 << (num_bits - 1)
    value = value.to(torch.int32) + offset
    if packed_dim == 0:
        value = value.transpose(0, 1)
    rows, cols = value.shape
    packed_cols = math.ceil(cols * num_bits / 32)
    padded_cols = math.ceil(cols / 32) * 32
    if padded_cols > cols:
        value = torch.nn.functional.pad(value, (0, padded_cols - cols))
    num_groups = padded_cols // 32
    rows_g = rows * num_groups
    value_g = value.reshape(rows_g, 32)
    output_g = torch.zeros(rows_g, num_bits, dtype=torch.int32)
    elem_i = torch.arange(32, dtype=torch.int32)
    bit_starts = elem_i * num_bits
    word_idx = (bit_starts // 32).long()
    bit_offset = bit_starts % 32
    output_g.scatter_add_(1, word_idx.unsqueeze(0).expand(rows_g, -1), value_g << bit_offset.unsqueeze(0))
    ov = bit_offset + num_bits - 32
    ov_mask = ov > 0
    if ov_mask.any():
        ov_vals = value_g[:, ov_mask] >> (num_bits - ov[ov_mask]).unsqueeze(0)
        output_g.scatter_add_(1, (word_idx[ov_mask] + 1).unsqueeze(0).expand(rows_g, -1), ov_vals)
    output = output_g.view(rows, num_groups * num_bits)[:, :packed_cols]
    if packed_dim == 0:
        output = output.transpose(0, 1)
    return output


def ct_unpack_from_int32(value, num_bits, shape, packed_dim=1):
    """compressed-tensors 0.18.0 unpack_from_int32 (2-D case)."""
    assert value.dtype is torch.int32
    if packed_dim == 0:
        value = value.transpose(0, 1)
    rows, num_words = value.shape
    cols = int(shape[packed_dim])
    if num_words % num_bits != 0:
        pad_words = num_bits - (num_words % num_bits)
        value = torch.nn.functional.pad(value, (0, pad_words))
        num_words += pad_words
    num_groups = num_words // num_bits
    rows_g = rows * num_groups
    value_g = value.reshape(rows_g, num_bits)
    elem_i = torch.arange(32, dtype=torch.int32)
    bit_starts = elem_i * num_bits
    word_idx = (bit_starts // 32).long()
    bit_offset = bit_starts % 32
    lo_bits = torch.clamp(32 - bit_offset, max=num_bits)
    output_g = (value_g[:, word_idx] >> bit_offset.unsqueeze(0)) & ((1 << lo_bits) - 1).unsqueeze(0)
    ov_mask = lo_bits < num_bits
    hi_bits = num_bits - lo_bits[ov_mask]
    right = (value_g[:, word_idx[ov_mask] + 1] & ((1 << hi_bits) - 1).unsqueeze(0)) << lo_bits[ov_mask].unsqueeze(0)
    output_g[:, ov_mask] |= right
    output = output_g.reshape(rows, num_groups * 32)[:, :cols]
    if packed_dim == 0:
        output = output.transpose(0, 1)
    offset = 1 << (num_bits - 1)
    return (output - offset).to(torch.int8)


def ct_weights_args(qc):
    groups = qc["config_groups"]
    assert len(groups) == 1, groups
    return next(iter(groups.values()))["weights"]


def ct_dequantize(tensors, prefix, qc):
    """W [out, in] of pack-quantized layer `prefix`: PackedQuantizationCompressor.decompress."""
    args = ct_weights_args(qc)
    num_bits = args["num_bits"]
    packed = tensors[prefix + ".weight_packed"]
    scale = tensors[prefix + ".weight_scale"].float()
    original_shape = torch.Size(tensors[prefix + ".weight_shape"].tolist())
    zero_point = None
    if not args["symmetric"] and args["strategy"] in ("group", "channel"):
        original_zp_shape = (*original_shape[:-1], scale.shape[-1])
        zero_point = ct_unpack_from_int32(tensors[prefix + ".weight_zero_point"], num_bits, original_zp_shape,
                                          packed_dim=0)
    x_q = ct_unpack_from_int32(packed, num_bits, original_shape)
    g_idx = tensors.get(prefix + ".weight_g_idx")
    # _process_group
    group_size = args["group_size"] if args["strategy"] == "group" else x_q.shape[-1]
    columns = x_q.shape[-1]
    if columns >= group_size and columns % group_size != 0:
        raise ValueError("tensor column shape must be divisble by the given group_size")
    is_column_order = g_idx is None or -1 in g_idx
    x = x_q
    if not is_column_order:
        perm = torch.argsort(g_idx)
        x = x.index_select(-1, perm)
    x = x.unflatten(-1, (math.ceil(x.shape[-1] / group_size), group_size))
    # _dequantize with scale / zero_point unsqueezed over the group
    dequant = x.to(scale.dtype)
    if zero_point is not None:
        dequant = dequant - zero_point.unsqueeze(-1).to(scale.dtype)
    dequant = (dequant * scale.unsqueeze(-1)).flatten(start_dim=-2)
    if not is_column_order:
        dequant = dequant.index_select(-1, torch.argsort(perm))
    return dequant


def dequantize_model(folder):
    """{weight name: float32 tensor} for every quantized linear of a checkpoint folder, plus its
    quantization_config and the shard files it was read from."""
    with open(os.path.join(folder, "config.json")) as f:
        qc = json.load(f)["quantization_config"]
    tensors, files = read_model(folder)
    out = {}
    if qc["quant_method"] == "gptq":
        for name in tensors:
            if name.endswith(".qweight"):
                prefix = name[:-len(".qweight")]
                out[prefix + ".weight"] = gptq_dequantize(tensors, prefix, qc)
    elif qc["quant_method"] == "compressed-tensors":
        assert qc["format"] == "pack-quantized", qc["format"]
        for name in tensors:
            if name.endswith(".weight_packed"):
                prefix = name[:-len(".weight_packed")]
                out[prefix + ".weight"] = ct_dequantize(tensors, prefix, qc)
    else:
        raise ValueError("unknown quant_method " + qc["quant_method"])
    return out, qc, tensors, files
