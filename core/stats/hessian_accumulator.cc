#include "core/stats/hessian_accumulator.h"

#include <ATen/ATen.h>

namespace ptq {

HessianAccumulator::HessianAccumulator(int64_t dim, c10::Device device) : sum_({dim, dim}, device) {}

void HessianAccumulator::Add(const at::Tensor& x) {
  at::Tensor flat = x.reshape({-1, x.size(-1)}).to(at::kFloat);
  sum_.Add(at::matmul(flat.t(), flat));
  count_ += flat.size(0);
}

void HessianAccumulator::Merge(const HessianAccumulator& other) {
  sum_.Merge(other.sum_);
  count_ += other.count_;
}

at::Tensor HessianAccumulator::Hessian() const {
  at::Tensor sum = sum_.Value();
  return count_ == 0 ? sum : sum * (2.0 / static_cast<double>(count_));
}

}  // namespace ptq
