#include "core/model/block_weights.h"

#include <ATen/ATen.h>

#include <cstring>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"

namespace ptq {

const char* LinearName(LinearKind kind) {
  switch (kind) {
    case LinearKind::kQ: return "self_attn.q_proj";
    case LinearKind::kK: return "self_attn.k_proj";
    case LinearKind::kV: return "self_attn.v_proj";
    case LinearKind::kO: return "self_attn.o_proj";
    case LinearKind::kGate: return "mlp.gate_proj";
    case LinearKind::kUp: return "mlp.up_proj";
    case LinearKind::kDown: return "mlp.down_proj";
  }
  return "?";
}

std::string LinearWeightName(int64_t layer, LinearKind kind) {
  return absl::StrCat("model.layers.", layer, ".", LinearName(kind), ".weight");
}

at::Tensor& BlockWeights::Linear(LinearKind kind) {
  switch (kind) {
    case LinearKind::kQ: return q;
    case LinearKind::kK: return k;
    case LinearKind::kV: return v;
    case LinearKind::kO: return o;
    case LinearKind::kGate: return gate;
    case LinearKind::kUp: return up;
    case LinearKind::kDown: return down;
  }
  return q;
}

const at::Tensor& BlockWeights::Linear(LinearKind kind) const {
  return const_cast<BlockWeights*>(this)->Linear(kind);
}

BlockWeights BlockWeights::To(c10::Device device) const {
  auto to = [device](const at::Tensor& t) { return t.defined() ? t.to(device) : t; };
  BlockWeights w;
  w.input_norm = to(input_norm);
  w.post_norm = to(post_norm);
  for (LinearKind kind : kAllLinears) w.Linear(kind) = to(Linear(kind));
  w.q_bias = to(q_bias);
  w.k_bias = to(k_bias);
  w.v_bias = to(v_bias);
  w.q_norm = to(q_norm);
  w.k_norm = to(k_norm);
  w.attention_window = attention_window;
  return w;
}

namespace {

absl::StatusOr<at::Tensor> LoadShaped(const WeightSource& source, const std::string& name,
                                      std::vector<int64_t> shape) {
  PTQ_ASSIGN_OR_RETURN(at::Tensor t, source.LoadFloat(name));
  if (t.sizes().vec() != shape) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " has shape [",
                                                   absl::StrJoin(t.sizes().vec(), ", "),
                                                   "] but config.json implies [",
                                                   absl::StrJoin(shape, ", "), "]"));
  }
  return t;
}

}  // namespace

absl::StatusOr<BlockWeights> LoadBlockWeights(const WeightSource& source, const ModelConfig& c,
                                              int64_t layer) {
  const int64_t d = c.hidden_size;
  const int64_t qd = c.num_attention_heads * c.head_dim;
  const int64_t kvd = c.num_key_value_heads * c.head_dim;
  const int64_t ff = c.intermediate_size;
  std::string prefix = absl::StrCat("model.layers.", layer, ".");
  BlockWeights w;
  PTQ_ASSIGN_OR_RETURN(w.input_norm, LoadShaped(source, prefix + "input_layernorm.weight", {d}));
  PTQ_ASSIGN_OR_RETURN(w.post_norm,
                       LoadShaped(source, prefix + "post_attention_layernorm.weight", {d}));
  const std::vector<int64_t> shapes[] = {{qd, d}, {kvd, d}, {kvd, d}, {d, qd},
                                         {ff, d}, {ff, d},  {d, ff}};
  for (size_t i = 0; i < kAllLinears.size(); ++i) {
    PTQ_ASSIGN_OR_RETURN(w.Linear(kAllLinears[i]),
                         LoadShaped(source, LinearWeightName(layer, kAllLinears[i]), shapes[i]));
  }
  if (c.attention_bias) {
    PTQ_ASSIGN_OR_RETURN(w.q_bias, LoadShaped(source, prefix + "self_attn.q_proj.bias", {qd}));
    PTQ_ASSIGN_OR_RETURN(w.k_bias, LoadShaped(source, prefix + "self_attn.k_proj.bias", {kvd}));
    PTQ_ASSIGN_OR_RETURN(w.v_bias, LoadShaped(source, prefix + "self_attn.v_proj.bias", {kvd}));
  }
  if (c.qk_norm) {
    PTQ_ASSIGN_OR_RETURN(w.q_norm, LoadShaped(source, prefix + "self_attn.q_norm.weight", {c.head_dim}));
    PTQ_ASSIGN_OR_RETURN(w.k_norm, LoadShaped(source, prefix + "self_attn.k_norm.weight", {c.head_dim}));
  }
  w.attention_window = c.AttentionWindow(layer);
  return w;
}

absl::Status CheckBlockTensorNames(const ModelConfig& c, const std::vector<std::string>& names) {
  std::set<std::string> known = {"input_layernorm.weight", "post_attention_layernorm.weight"};
  for (LinearKind kind : kAllLinears) {
    // Plain, GPTQ and compressed-tensors pack-quantized layers (the weight sources read all three).
    for (const char* part : {".weight", ".qweight", ".qzeros", ".scales", ".g_idx", ".weight_packed",
                             ".weight_scale", ".weight_zero_point", ".weight_shape", ".weight_g_idx"}) {
      known.insert(absl::StrCat(LinearName(kind), part));
    }
  }
  if (c.attention_bias) {
    for (const char* b : {"self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"}) {
      known.insert(b);
    }
  }
  if (c.qk_norm) known.insert({"self_attn.q_norm.weight", "self_attn.k_norm.weight"});
  for (const std::string& name : names) {
    if (!absl::StartsWith(name, "model.layers.")) continue;
    // model.layers.{i}.{rest}
    const size_t dot = name.find('.', std::strlen("model.layers."));
    const std::string rest = dot == std::string::npos ? "" : name.substr(dot + 1);
    if (known.count(rest) == 0) {
      return absl::UnimplementedError(absl::StrCat(
          "tensor ", name, " is not part of the ", c.model_type,
          " block the forward runs (fused projections, attention sinks, experts or biases are not "
          "implemented)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace ptq
