// Accumulates sum x x^T (float64) and the token count for one slot's inputs. Statistics are sums plus
// counts so data-parallel workers can add their shards with one all-reduce (docs/algorithms.md).
#pragma once

#include <cstdint>

#include <ATen/core/Tensor.h>

namespace ptq::worker {

class HessianAccumulator {
 public:
  explicit HessianAccumulator(int64_t dim);
  // x: [..., dim]; every leading index is one token. Each call's product is formed in float32 and
  // added in float64, in call order, so the same batches in the same order give the same bits.
  void Add(const at::Tensor& x);
  // Adds another accumulator's partial sums (a shard of the same statistic).
  void Merge(const HessianAccumulator& other);
  const at::Tensor& sum() const { return sum_; }
  int64_t count() const { return count_; }
  // H = (2 / n) sum x x^T, float64.
  at::Tensor Hessian() const;

 private:
  at::Tensor sum_;  // [dim, dim] float64
  int64_t count_ = 0;
};

}  // namespace ptq::worker
