// Rotary position embedding in Hugging Face's "rotate half" convention, with the rope_scaling types
// the config parser accepts (none, linear, llama3).
#pragma once

#include <ATen/core/Tensor.h>

#include "common/model_config.h"

namespace ptq {

struct RopeTable {
  at::Tensor cos;  // [max_positions, head_dim], float32
  at::Tensor sin;  // [max_positions, head_dim], float32
  // Built on the host and copied, so every device uses the same table bit for bit.
  RopeTable To(c10::Device device) const { return {cos.to(device), sin.to(device)}; }
};

// Computed in float32 exactly as transformers does, so logits agree to ~1e-5.
RopeTable BuildRopeTable(const ModelConfig& config, int64_t max_positions);

// x: [batch, heads, tokens, head_dim]; positions 0..tokens-1.
at::Tensor ApplyRope(const at::Tensor& x, const RopeTable& table);

}  // namespace ptq
