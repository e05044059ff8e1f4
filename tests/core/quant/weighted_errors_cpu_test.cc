// The weighted search's vector pass at every lane width this CPU runs (4, 8 with AVX2, 16 with
// AVX-512) against the scalar sums written out from its definition: the same float64 bits.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "core/quant/weighted_errors_cpu.h"

namespace ptq {
namespace {

// errors[c * zeros + j][b] = sum_k double(d)^2 h[b][k] in order k = 0, 1, ...,
// d = clamp(nearbyint(w / s), -z, maxq - z) * s - w in float.
std::vector<double> ScalarErrors(const float* w, const double* h, const float* scale,
                                 const float* zero, int64_t count, int64_t zeros, int64_t batch,
                                 int64_t n, float maxq) {
  std::vector<double> errors(count * zeros * batch);
  for (int64_t c = 0; c < count; ++c) {
    for (int64_t j = 0; j < zeros; ++j) {
      for (int64_t b = 0; b < batch; ++b) {
        const float s = scale[c * batch + b], z = zero[(c * zeros + j) * batch + b];
        double sum = 0;
        for (int64_t k = 0; k < n; ++k) {
          const float x = w[b * n + k];
          const float q = std::min(std::max(std::nearbyint(x / s), -z), maxq - z);
          const float d = q * s - x;
          const double term = static_cast<double>(d) * static_cast<double>(d) * h[b * n + k];
          sum = k == 0 ? term : sum + term;
        }
        errors[(c * zeros + j) * batch + b] = sum;
      }
    }
  }
  return errors;
}

TEST(WeightedErrorsCpuTest, EveryLaneWidthGivesTheScalarSums) {
  const int widest = LimitWeightedErrorsLanesForTesting(0);
  std::vector<int> widths;
  for (int lanes : {4, 8, 16}) {
    if (lanes <= widest) widths.push_back(lanes);
  }
  if (widest < 16) {
    std::printf("note: this CPU runs at most %d lanes; wider widths are not checked here\n",
                widest);
  }
  at::manual_seed(3);
  for (int64_t n : {int64_t{1}, int64_t{37}, int64_t{128}}) {
    for (int64_t zeros : {int64_t{1}, int64_t{2}}) {
      for (int64_t count : {int64_t{1}, int64_t{7}, int64_t{80}}) {
        const int64_t batch = 11;
        const float maxq = 3;
        const at::Tensor w = (at::randn({batch, n}) * at::rand({batch, 1}) * 3).contiguous();
        const at::Tensor h = (at::rand({batch, n}, at::kDouble) * 4 + 0.01).contiguous();
        const at::Tensor scale = (at::rand({count, batch}) * 0.8 + 0.05).contiguous();
        const at::Tensor zero =
            at::randint(0, 4, {count, zeros, batch}).to(at::kFloat).contiguous();
        const std::vector<double> want =
            ScalarErrors(w.data_ptr<float>(), h.data_ptr<double>(), scale.data_ptr<float>(),
                         zero.data_ptr<float>(), count, zeros, batch, n, maxq);
        for (int lanes : widths) {
          ASSERT_EQ(LimitWeightedErrorsLanesForTesting(lanes), lanes);
          std::vector<double> got(want.size(), -1);
          WeightedErrorsCpu(w.data_ptr<float>(), h.data_ptr<double>(), scale.data_ptr<float>(),
                            zero.data_ptr<float>(), count, zeros, batch, n, maxq, got.data());
          for (size_t i = 0; i < want.size(); ++i) {
            ASSERT_EQ(got[i], want[i]) << "lanes " << lanes << " n " << n << " zeros " << zeros
                                       << " count " << count << " at " << i;
          }
        }
      }
    }
  }
  LimitWeightedErrorsLanesForTesting(0);
}

}  // namespace
}  // namespace ptq
