// Per-head output-side statistics of attention for BoA/TurboBoA (docs/algorithms.md, "BoA /
// TurboBoA"): for W_q the covariance of the RoPE'd keys its head attends with, for W_k that of the
// RoPE'd queries of the heads sharing it (grouped-query attention), both rotated back through the
// RoPE matrix of each position and averaged over positions. Kept as sums plus a count so workers can
// all-reduce them; Finalize does the rotation once, at the end.
//
// With Qwen3's per-head RMSNorm between the projection and RoPE the queries and keys are taken after
// the norm, where the scores are formed, and H_out is carried back to the projection's output
// through the norm's Jacobian without its per-token parts: diag(g) H diag(g) for the gains g (the
// 1/rms scale and the projection off the vector's own direction are dropped; a common scale does not
// change the compensation).
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include <ATen/core/Tensor.h>

#include "core/stats/exact_sum.h"
#include "core/stats/qk_hessian.h"
#include "core/model/llama_block.h"

namespace ptq {

class AttentionStatistics final : public BlockObserver {
 public:
  AttentionStatistics(const ModelConfig& config, int64_t seq_len, QkHessian kind = QkHessian::kMoment,
                      c10::Device device = c10::kCPU);
  void OnAttention(const AttentionInternals& internals) override;
  // Only the softmax-weighted kind reads the probabilities.
  bool ReadsProbabilities() const override { return kind_ == QkHessian::kSoftmax; }

  // H_out per query head ([heads] of [head_dim, head_dim], float64), from the keys.
  std::vector<at::Tensor> QueryOutputHessians() const;
  // H_out per key/value head, from the queries of the heads that share it.
  std::vector<at::Tensor> KeyOutputHessians() const;

  // Sums kept for merging (all-reduce), and the token count.
  std::vector<ExactSum*> sums() { return {&key_sum_, &query_sum_, &key_mean_sum_, &gain_sum_}; }
  int64_t& tokens() { return tokens_; }

 private:
  at::Tensor RotateBack(const at::Tensor& m) const;  // (1/T) sum_i R_i^T m R_i
  // sum_i R_i^T m_i R_i over the position axis of m: [..., T, hd, hd] -> [..., hd, hd].
  at::Tensor RotateBackEach(const at::Tensor& m) const;
  void AddSoftmax(const AttentionInternals& in);
  // diag(g) m diag(g) with g the query (row 0) or key (row 1) norm gains; m without q/k norms.
  at::Tensor ThroughNorm(const at::Tensor& m, int64_t row) const;
  ModelConfig config_;
  QkHessian kind_;
  // config.qk_norm: the q (row 0) and k (row 1) norm gains times the tokens of each batch, so a rank
  // that saw no batch still gets them through the all-reduce ([2, hd]).
  ExactSum gain_sum_;
  at::Tensor rotations_;  // [T, hd, hd]: R_i, the RoPE rotation at position i
  // kMoment/kCovariance: per kv head, sum over tokens of k k^T, of q q^T over the sharing heads
  // ([kv, hd, hd]) and of k ([kv, hd]). kSoftmax: per query head the rotated-back
  // attention-weighted key covariances ([heads, hd, hd]) and per kv head the rotated-back
  // attention-weighted query moments ([kv, hd, hd]); key_mean_sum_ unused.
  ExactSum key_sum_;
  ExactSum query_sum_;
  ExactSum key_mean_sum_;
  int64_t tokens_ = 0;
};

}  // namespace ptq
