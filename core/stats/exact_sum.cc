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
      low_(at::zeros(shape, at::TensorOptions().dtype(at::kLong).device(device))),
      non_finite_(at::zeros({}, at::TensorOptions().dtype(at::kLong).device(device))) {}

void ExactSum::Add(const at::Tensor& term) {
  at::Tensor x = term.to(high_.device()).to(at::kDouble) * kScale;  // exact: a power of two
  at::Tensor finite = at::isfinite(x);
  non_finite_.add_(x.numel() - finite.sum());
  x = at::where(finite, x, at::zeros_like(x));
  at::Tensor high = at::floor(x / kLowSpan);        // exact
  at::Tensor low = at::round(x - high * kLowSpan);  // in [0, 2^31]: exact before rounding
  high_.add_(high.to(at::kLong));
  low_.add_(low.to(at::kLong));
}

void ExactSum::Merge(const ExactSum& other) {
  high_.add_(other.high_);
  low_.add_(other.low_);
  non_finite_.add_(other.non_finite_);
}

int64_t ExactSum::NonFiniteCount() const {
  return non_finite_.defined() ? non_finite_.item<int64_t>() : 0;
}

at::Tensor ExactSum::Value() const {
  at::Tensor v = high_.to(at::kDouble) * (kLowSpan / kScale) + low_.to(at::kDouble) / kScale;
  // NaN everywhere once a non-finite term was added, decided on the device.
  return at::where(non_finite_ > 0, at::full_like(v, std::nan("")), v);
}

}  // namespace ptq
