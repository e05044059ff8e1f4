#include "core/model/llama_block.h"

#include <ATen/ATen.h>

#include <cmath>
#include <limits>
#include <utility>

namespace ptq {

LinearSlot SlotOf(LinearKind kind) {
  switch (kind) {
    case LinearKind::kQ:
    case LinearKind::kK:
    case LinearKind::kV: return LinearSlot::kAttnIn;
    case LinearKind::kO: return LinearSlot::kAttnOut;
    case LinearKind::kGate:
    case LinearKind::kUp: return LinearSlot::kMlpIn;
    case LinearKind::kDown: return LinearSlot::kMlpHidden;
  }
  return LinearSlot::kAttnIn;
}

at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  at::Tensor variance = x.pow(2).mean(-1, /*keepdim=*/true);
  return weight * (x * at::rsqrt(variance + eps));
}

at::Tensor AttentionMask(int64_t tokens, int64_t window, const at::TensorOptions& options) {
  at::Tensor masked = at::ones({tokens, tokens}, options.dtype(at::kBool)).triu(1);
  if (window > 0 && window < tokens) {
    masked = masked.logical_or(at::ones({tokens, tokens}, options.dtype(at::kBool)).tril(-window));
  }
  return masked;
}

namespace {

// Qwen3's RMSNorm over each head's query or key (x: [batch, tokens, heads, head_dim]); a no-op for
// families without it.
at::Tensor HeadNorm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  return weight.defined() ? RmsNorm(x, weight, eps) : x;
}

// Queries [batch, heads, tokens, hd] and keys [batch, kv_heads, tokens, hd], normed and rotated.
std::pair<at::Tensor, at::Tensor> QueriesAndKeys(const at::Tensor& x, const BlockWeights& w,
                                                 const ModelConfig& c, const RopeTable& rope) {
  const int64_t batch = x.size(0);
  const int64_t tokens = x.size(1);
  const int64_t hd = c.head_dim;
  at::Tensor q = HeadNorm(at::linear(x, w.q, w.q_bias).view({batch, tokens, c.num_attention_heads, hd}),
                          w.q_norm, c.rms_norm_eps).transpose(1, 2);
  at::Tensor k = HeadNorm(at::linear(x, w.k, w.k_bias).view({batch, tokens, c.num_key_value_heads, hd}),
                          w.k_norm, c.rms_norm_eps).transpose(1, 2);
  return {ApplyRope(q, rope), ApplyRope(k, rope)};
}

}  // namespace

void ObserveQueriesAndKeys(const at::Tensor& x, const BlockWeights& w, const ModelConfig& c,
                           const RopeTable& rope, BlockObserver* observer) {
  const auto [q, k] = QueriesAndKeys(x, w, c, rope);
  const at::Tensor none;
  observer->OnAttention({q, k, none, none, w.q_norm, w.k_norm});
}

at::Tensor AttentionStage(const at::Tensor& x, const BlockWeights& w, const ModelConfig& c,
                          const RopeTable& rope, BlockObserver* observer) {
  const int64_t batch = x.size(0);
  const int64_t tokens = x.size(1);
  const int64_t heads = c.num_attention_heads;
  const int64_t kv_heads = c.num_key_value_heads;
  const int64_t hd = c.head_dim;
  auto [q, k] = QueriesAndKeys(x, w, c, rope);
  at::Tensor v = at::linear(x, w.v, w.v_bias).view({batch, tokens, kv_heads, hd}).transpose(1, 2);
  // Grouped-query attention: query head h reads key/value head h / (heads / kv_heads).
  const int64_t rep = heads / kv_heads;
  at::Tensor k_rep = rep == 1 ? k : k.repeat_interleave(rep, 1);
  at::Tensor v_rep = rep == 1 ? v : v.repeat_interleave(rep, 1);
  // In place: the same float ops as `scores * scale` and masked_fill, without two more
  // [batch, heads, tokens, tokens] tensors per call.
  at::Tensor scores = at::matmul(q, k_rep.transpose(-1, -2));
  scores.mul_(1.0 / std::sqrt(double(hd)));
  scores.masked_fill_(AttentionMask(tokens, w.attention_window, x.options()),
                      -std::numeric_limits<float>::infinity());
  at::Tensor probs = at::softmax(scores, -1);
  if (observer != nullptr) observer->OnAttention({q, k, v, probs, w.q_norm, w.k_norm});
  return at::matmul(probs, v_rep).transpose(1, 2).reshape({batch, tokens, heads * hd});
}

at::Tensor AttentionInput(const at::Tensor& hidden, const BlockWeights& w, const ModelConfig& c) {
  return RmsNorm(hidden, w.input_norm, c.rms_norm_eps);
}

at::Tensor AttentionResidual(const at::Tensor& hidden, const at::Tensor& attn, const BlockWeights& w) {
  return hidden + at::linear(attn, w.o);
}

at::Tensor MlpInput(const at::Tensor& h, const BlockWeights& w, const ModelConfig& c) {
  return RmsNorm(h, w.post_norm, c.rms_norm_eps);
}

at::Tensor MlpActivation(const at::Tensor& y, const BlockWeights& w) {
  return at::silu(at::linear(y, w.gate)) * at::linear(y, w.up);
}

at::Tensor MlpResidual(const at::Tensor& h, const at::Tensor& act, const BlockWeights& w) {
  return h + at::linear(act, w.down);
}

at::Tensor BlockForward(const at::Tensor& hidden, const BlockWeights& w, const ModelConfig& c,
                        const RopeTable& rope, BlockObserver* observer,
                        std::optional<LinearSlot> stop_after) {
  auto observe = [&](LinearSlot slot, const at::Tensor& x) {
    if (observer != nullptr) observer->OnLinearInput(slot, x);
    return stop_after.has_value() && *stop_after == slot;
  };
  at::Tensor x = AttentionInput(hidden, w, c);
  if (observe(LinearSlot::kAttnIn, x)) return at::Tensor();
  at::Tensor attn = AttentionStage(x, w, c, rope, observer);
  if (observe(LinearSlot::kAttnOut, attn)) return at::Tensor();
  at::Tensor h = AttentionResidual(hidden, attn, w);
  at::Tensor y = MlpInput(h, w, c);
  if (observe(LinearSlot::kMlpIn, y)) return at::Tensor();
  at::Tensor act = MlpActivation(y, w);
  if (observe(LinearSlot::kMlpHidden, act)) return at::Tensor();
  return MlpResidual(h, act, w);
}

}  // namespace ptq
