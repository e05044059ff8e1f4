#include "worker/hessian_accumulator.h"

#include <ATen/ATen.h>

namespace ptq::worker {

HessianAccumulator::HessianAccumulator(int64_t dim) : sum_(at::zeros({dim, dim}, at::kDouble)) {}

void HessianAccumulator::Add(const at::Tensor& x) {
  at::Tensor flat = x.reshape({-1, x.size(-1)}).to(at::kFloat);
  sum_.add_(at::matmul(flat.t(), flat).to(at::kDouble));
  count_ += flat.size(0);
}

void HessianAccumulator::Merge(const HessianAccumulator& other) {
  sum_.add_(other.sum_);
  count_ += other.count_;
}

at::Tensor HessianAccumulator::Hessian() const {
  return count_ == 0 ? sum_.clone() : sum_ * (2.0 / static_cast<double>(count_));
}

}  // namespace ptq::worker
