// The forward of one Llama decoder block on a batch of hidden states: the unit the quantizer (and
// later each worker) runs. Runs on whatever device the tensors live on.
#pragma once

#include <optional>

#include <ATen/core/Tensor.h>
#include <c10/core/TensorOptions.h>

#include "common/model_config.h"
#include "core/model/block_weights.h"
#include "core/model/rope.h"

namespace ptq {

// The four places where linear layers read their input; layers in one slot share it.
enum class LinearSlot { kAttnIn, kAttnOut, kMlpIn, kMlpHidden };
// {q,k,v} read kAttnIn, o reads kAttnOut, {gate,up} read kMlpIn, down reads kMlpHidden.
LinearSlot SlotOf(LinearKind kind);

// What attention-aware statistics need from inside attention: the queries and keys where the scores
// are formed (after Qwen3's per-head norms and RoPE).
struct AttentionInternals {
  const at::Tensor& queries;  // [batch, heads, tokens, head_dim], after the q norm and RoPE
  const at::Tensor& keys;     // [batch, kv_heads, tokens, head_dim], after the k norm and RoPE
  // values: [batch, kv_heads, tokens, head_dim]; probs: [batch, heads, tokens, tokens], softmax
  // output (window-masked). Both undefined when the observer does not read them (ReadsProbabilities).
  const at::Tensor& values;
  const at::Tensor& probs;
  at::Tensor q_norm = {};     // [head_dim] gains of the per-head query norm; undefined without one
  at::Tensor k_norm = {};     // likewise for keys
};

class BlockObserver {
 public:
  virtual ~BlockObserver() = default;
  // x: [batch, tokens, in] float32, the input shared by the slot's layers.
  virtual void OnLinearInput(LinearSlot slot, const at::Tensor& x) {}
  virtual void OnAttention(const AttentionInternals& internals) {}
  // False when OnAttention reads only queries and keys: then the scores, softmax and values need
  // not be computed for it (ObserveQueriesAndKeys).
  virtual bool ReadsProbabilities() const { return true; }
};

at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps);

// [tokens, tokens] bool, true where query i may not see key j: j > i, or j <= i - window when the
// layer has a sliding window (window > 0), as transformers masks it.
at::Tensor AttentionMask(int64_t tokens, int64_t window, const at::TensorOptions& options);

// The block forward in stages (BlockForward is their composition, op for op), for a caller that
// keeps one stage's output for every calibration window and continues from it once the next
// layers are quantized, instead of starting over at the block input (core/pipeline/block_stream.h).
// x: the kAttnIn input, RmsNorm of the block input.
at::Tensor AttentionInput(const at::Tensor& hidden, const BlockWeights& w, const ModelConfig& c);
// q/k/v, RoPE, causal softmax attention: the kAttnOut input [batch, tokens, heads * head_dim].
// Tells the observer OnAttention (not OnLinearInput).
at::Tensor AttentionStage(const at::Tensor& x, const BlockWeights& w, const ModelConfig& c,
                          const RopeTable& rope, BlockObserver* observer = nullptr);
// Tells the observer OnAttention with the queries and keys AttentionStage computes (the same ops),
// values and probs undefined: for an observer that does not read them, without the attention itself.
void ObserveQueriesAndKeys(const at::Tensor& x, const BlockWeights& w, const ModelConfig& c,
                           const RopeTable& rope, BlockObserver* observer);
// h = hidden + o_proj(attn): the residual stream after attention.
at::Tensor AttentionResidual(const at::Tensor& hidden, const at::Tensor& attn, const BlockWeights& w);
// The kMlpIn input, RmsNorm of h.
at::Tensor MlpInput(const at::Tensor& h, const BlockWeights& w, const ModelConfig& c);
// silu(gate_proj(y)) * up_proj(y): the kMlpHidden input.
at::Tensor MlpActivation(const at::Tensor& y, const BlockWeights& w);
// The block output h + down_proj(act).
at::Tensor MlpResidual(const at::Tensor& h, const at::Tensor& act, const BlockWeights& w);

// hidden: [batch, tokens, hidden] float32. Returns the block output of the same shape, or an
// undefined tensor when `stop_after` is set and that slot's input has been observed (the rest of the
// block is skipped to save work).
at::Tensor BlockForward(const at::Tensor& hidden, const BlockWeights& weights,
                        const ModelConfig& config, const RopeTable& rope,
                        BlockObserver* observer = nullptr,
                        std::optional<LinearSlot> stop_after = std::nullopt);

}  // namespace ptq
