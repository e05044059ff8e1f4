#include "core/stats/exact_sum.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <atomic>
#include <cmath>

namespace ptq {
namespace {
constexpr double kScale = 1099511627776.0;     // 2^40
constexpr double kLowSpan = 2147483648.0;      // 2^31

// AddWithTensorOps element by element, in one pass: the same float64 steps (each exact but the
// rounding of the low limb, half to even as at::round) and the same conversions to int64.
template <typename T>
void AddTermsCpu(const T* term, int64_t n, int64_t* high, int64_t* low, int64_t* non_finite) {
  std::atomic<int64_t> skipped{0};
  at::parallel_for(0, n, 1 << 14, [&](int64_t i0, int64_t i1) {
    int64_t local = 0;
    for (int64_t i = i0; i < i1; ++i) {
      const double x = static_cast<double>(term[i]) * kScale;
      if (!std::isfinite(x)) {
        ++local;
        continue;  // the tensor path adds limbs of 0
      }
      const double h = std::floor(x / kLowSpan);
      const double l = std::nearbyint(x - h * kLowSpan);
      high[i] += static_cast<int64_t>(h);
      low[i] += static_cast<int64_t>(l);
    }
    skipped += local;
  });
  *non_finite += skipped.load();
}

}  // namespace

ExactSum::ExactSum(at::IntArrayRef shape, at::Device device)
    : high_(at::zeros(shape, at::TensorOptions().dtype(at::kLong).device(device))),
      low_(at::zeros(shape, at::TensorOptions().dtype(at::kLong).device(device))),
      non_finite_(at::zeros({}, at::TensorOptions().dtype(at::kLong).device(device))) {}

void ExactSum::Add(const at::Tensor& term) {
  const at::ScalarType type = term.scalar_type();
  if (!high_.is_cpu() || !high_.is_contiguous() || !low_.is_contiguous() ||
      (type != at::kFloat && type != at::kDouble)) {
    AddWithTensorOps(term);
    return;
  }
  TORCH_CHECK(term.sizes() == high_.sizes(), "ExactSum::Add: a term of shape ", term.sizes(),
              " for a sum of shape ", high_.sizes());
  const at::Tensor t = term.to(at::kCPU).contiguous();
  int64_t* non_finite = non_finite_.data_ptr<int64_t>();
  if (type == at::kFloat) {
    AddTermsCpu(t.data_ptr<float>(), t.numel(), high_.data_ptr<int64_t>(), low_.data_ptr<int64_t>(),
                non_finite);
  } else {
    AddTermsCpu(t.data_ptr<double>(), t.numel(), high_.data_ptr<int64_t>(), low_.data_ptr<int64_t>(),
                non_finite);
  }
}

void ExactSum::AddWithTensorOps(const at::Tensor& term) {
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
