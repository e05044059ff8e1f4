// Accumulates sum x x^T and the token count for one slot's inputs. Statistics are sums plus counts so
// data-parallel workers can add their shards with one all-reduce (docs/algorithms.md); the sum is an
// ExactSum, so the shards' order and grouping do not change a bit of the result.
#pragma once

#include <cstdint>

#include <ATen/core/Tensor.h>

#include "core/stats/exact_sum.h"

namespace ptq {

class HessianAccumulator {
 public:
  // The sum lives on `device`: each product is formed and added there.
  explicit HessianAccumulator(int64_t dim, c10::Device device = c10::kCPU);
  // x: [..., dim]; every leading index is one token. Each call's product is formed in float32 (so
  // the same batch gives the same product wherever it runs) and added exactly.
  void Add(const at::Tensor& x);
  // Adds another accumulator's partial sums (a shard of the same statistic).
  void Merge(const HessianAccumulator& other);
  ExactSum& sum() { return sum_; }
  int64_t& count() { return count_; }
  int64_t count() const { return count_; }
  // H = (2 / n) sum x x^T, float64.
  at::Tensor Hessian() const;

 private:
  ExactSum sum_;  // [dim, dim]
  int64_t count_ = 0;
};

}  // namespace ptq
