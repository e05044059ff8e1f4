#include "core/stats/exact_sum.h"

#include <ATen/ATen.h>

#include <cmath>

namespace ptq {
namespace {
constexpr double kScale = 1099511627776.0;     // 2^40
constexpr double kLowSpan = 2147483648.0;      // 2^31
}  // namespace

ExactSum::ExactSum(at::IntArrayRef shape, at::Device device)
    : high_(at::zeros(shape, at::TensorOptions().dtype(at::kLong).device(device))),
      low_(at::zeros(shape, at::TensorOptions().dtype(at::kLong).device(device))) {}

void ExactSum::Add(const at::Tensor& term) {
  at::Tensor x = term.to(high_.device()).to(at::kDouble) * kScale;  // exact: a power of two
  at::Tensor finite = at::isfinite(x);
  const int64_t bad = x.numel() - finite.sum().item<int64_t>();
  if (bad > 0) {
    non_finite_ += bad;
    x = at::where(finite, x, at::zeros_like(x));
  }
  at::Tensor high = at::floor(x / kLowSpan);        // exact
  at::Tensor low = at::round(x - high * kLowSpan);  // in [0, 2^31]: exact before rounding
  high_.add_(high.to(at::kLong));
  low_.add_(low.to(at::kLong));
}

void ExactSum::Merge(const ExactSum& other) {
  high_.add_(other.high_);
  low_.add_(other.low_);
  non_finite_ += other.non_finite_;
}

at::Tensor ExactSum::Value() const {
  at::Tensor v = high_.to(at::kDouble) * (kLowSpan / kScale) + low_.to(at::kDouble) / kScale;
  return non_finite_ > 0 ? at::full_like(v, std::nan("")) : v;
}

}  // namespace ptq
