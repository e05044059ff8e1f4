// The result of quantizing one linear layer: what the checkpoint writer packs and what the next
// block's forward uses.
#pragma once

#include <cstdint>

#include <vector>

#include <ATen/core/Tensor.h>

#include "core/quant/quant_grid.h"

namespace ptq {

struct QuantizedLinear {
  at::Tensor weight;  // [out, in] float32: scales * (codes - zeros), the dequantized weight
  at::Tensor codes;   // [out, in] uint8, original column order
  at::Tensor scales;  // [out, num_groups] float32
  at::Tensor zeros;   // [out, num_groups] float32, integer-valued
  at::Tensor g_idx;   // [in] int32: group of each input column (act-order permutes it)
  int64_t group_size = 0;  // columns per group; equals `in` for per-channel grids
  int bits = 4;
  bool sym = false;
  double loss = 0;  // tr((W - W_hat) H (W - W_hat)^T) with the undamped H; 0 when no H was given

  // Every tensor on `device` (the sinks take host copies; a reloaded layer goes back to the device).
  QuantizedLinear To(c10::Device device) const {
    QuantizedLinear q = *this;
    for (at::Tensor* t : {&q.weight, &q.codes, &q.scales, &q.zeros, &q.g_idx}) {
      if (t->defined()) *t = t->to(device);
    }
    return q;
  }
};

// tr((W - Q) H (W - Q)^T): the layer-wise reconstruction loss GPTQ minimises (up to H's 2/n).
double LayerLoss(const at::Tensor& weight, const at::Tensor& quantized, const at::Tensor& hessian);

// Stacks row blocks of one layer (heads, row units, a worker's share) in order: weight, codes,
// scales and zeros concatenated; g_idx, grid and group size from the first block (they agree).
// REQUIRES: !parts.empty().
QuantizedLinear ConcatRows(const std::vector<QuantizedLinear>& parts);

// Rebuilds the dequantized weight from codes, scales, zeros and g_idx (a check on the packed form).
at::Tensor DequantizeLinear(const QuantizedLinear& q);

}  // namespace ptq
