// Per-head output-side statistics of attention for BoA/TurboBoA (docs/algorithms.md, "BoA /
// TurboBoA"): for W_q the covariance of the RoPE'd keys its head attends with, for W_k that of the
// RoPE'd queries of the heads sharing it (grouped-query attention), both rotated back through the
// RoPE matrix of each position and averaged over positions. Kept as sums plus a count so workers can
// all-reduce them; Finalize does the rotation once, at the end.
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

#include "worker/exact_sum.h"
#include "worker/llama_block.h"

namespace ptq::worker {

class AttentionStatistics final : public BlockObserver {
 public:
  AttentionStatistics(const ModelConfig& config, int64_t seq_len);
  void OnAttention(const AttentionInternals& internals) override;

  // H_out per query head ([heads] of [head_dim, head_dim], float64), from the keys.
  std::vector<at::Tensor> QueryOutputHessians() const;
  // H_out per key/value head, from the queries of the heads that share it.
  std::vector<at::Tensor> KeyOutputHessians() const;

  // Sums kept for merging (all-reduce): [kv_heads, hd, hd] each, and the token count.
  ExactSum& key_sum() { return key_sum_; }
  ExactSum& query_sum() { return query_sum_; }
  int64_t& tokens() { return tokens_; }

 private:
  at::Tensor RotateBack(const at::Tensor& m) const;  // (1/T) sum_i R_i^T m R_i
  ModelConfig config_;
  at::Tensor rotations_;  // [T, hd, hd]: R_i, the RoPE rotation at position i
  ExactSum key_sum_;    // sum over tokens of k k^T per kv head
  ExactSum query_sum_;  // sum over tokens and sharing heads of q q^T per kv head
  int64_t tokens_ = 0;
};

}  // namespace ptq::worker
