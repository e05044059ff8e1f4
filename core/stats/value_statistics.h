// BoA's Hessian for W_v (docs/algorithms.md, "block_v"): head h's attention output is
// A_h X W_v,h^T, so the input covariance that matters for the value rows of a key/value head is that
// of the attention-weighted inputs A_h X, summed over the query heads that share it (grouped-query
// attention). One hidden x hidden matrix per key/value head: the memory cost --no-value-block avoids.
// Sums plus a count, so workers can all-reduce (or reduce-scatter by head) them.
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

#include "core/stats/exact_sum.h"
#include "core/model/llama_block.h"

namespace ptq {

class ValueStatistics final : public BlockObserver {
 public:
  explicit ValueStatistics(const ModelConfig& config, c10::Device device = c10::kCPU);
  // Keeps the attention input of the current forward (the x that A multiplies).
  void OnLinearInput(LinearSlot slot, const at::Tensor& x) override;
  void OnAttention(const AttentionInternals& internals) override;

  // H_in for the value rows of each key/value head: (2/n) sum (A_h x)(A_h x)^T over tokens and the
  // query heads sharing it; [kv_heads] of [hidden, hidden] float64.
  std::vector<at::Tensor> Hessians() const;
  ExactSum& sum() { return sum_; }  // [kv_heads, hidden, hidden]
  int64_t& count() { return count_; }

 private:
  ModelConfig config_;
  at::Tensor input_;  // [batch, tokens, hidden] of the forward in progress
  ExactSum sum_;
  int64_t count_ = 0;  // tokens (per query head)
};

}  // namespace ptq
