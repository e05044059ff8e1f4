// The tensors of one Llama decoder block, float32, and the names of its seven linear layers.
#pragma once

#include <array>
#include <string>
#include <string_view>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "common/model_config.h"
#include "core/model/weight_source.h"

namespace ptq {

enum class LinearKind { kQ, kK, kV, kO, kGate, kUp, kDown };
inline constexpr std::array<LinearKind, 7> kAllLinears = {
    LinearKind::kQ, LinearKind::kK, LinearKind::kV, LinearKind::kO,
    LinearKind::kGate, LinearKind::kUp, LinearKind::kDown};

// "self_attn.q_proj", ..., "mlp.down_proj": the Hugging Face name inside a block.
const char* LinearName(LinearKind kind);
// "model.layers.{layer}.{LinearName}.weight"
std::string LinearWeightName(int64_t layer, LinearKind kind);

struct BlockWeights {
  at::Tensor input_norm;  // [hidden]
  at::Tensor post_norm;   // [hidden]
  at::Tensor q, k, v, o;  // [out, in]
  at::Tensor gate, up, down;
  at::Tensor q_bias, k_bias, v_bias;  // undefined when the model has no attention bias
  at::Tensor q_norm, k_norm;          // [head_dim], Qwen3's per-head norms; undefined otherwise
  int64_t attention_window = 0;       // this layer's sliding window (ModelConfig::AttentionWindow)

  at::Tensor& Linear(LinearKind kind);
  const at::Tensor& Linear(LinearKind kind) const;
  // Every tensor on `device` (the same tensors when they are there already).
  BlockWeights To(c10::Device device) const;
};

// Loads block `layer` and checks every shape against the config.
absl::StatusOr<BlockWeights> LoadBlockWeights(const WeightSource& source, const ModelConfig& config,
                                              int64_t layer);

// Refuses a model with a block tensor the forward would not read (fused projections, attention
// sinks, experts, biases the config does not announce, ...), naming it: nothing is skipped silently.
// Quantized linears may appear as GPTQ's qweight/qzeros/scales/g_idx.
absl::Status CheckBlockTensorNames(const ModelConfig& config, const std::vector<std::string>& names);

}  // namespace ptq
