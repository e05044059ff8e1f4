// What the CPU-against-CUDA tests share: whether they can run (a libtorch with CUDA and a visible
// device; otherwise they skip with the reason), random problems, and the comparisons their named
// tolerances bound.
#pragma once

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/quant/gptq_quantizer.h"

namespace ptq::gpu_testing {

// PTQ_GPU_TESTS_ON_CPU=1 runs these tests with the CPU standing in for CUDA, to check the tests'
// own logic where no GPU exists: every comparison is then the CPU against itself.
inline bool CpuStandsIn() {
  const char* v = std::getenv("PTQ_GPU_TESTS_ON_CPU");
  return v != nullptr && std::string(v) == "1";
}

// "" when CUDA tensors can be made here (or the CPU stands in), else why not.
inline std::string GpuUnavailableReason() {
  if (CpuStandsIn()) return "";
#if !defined(PTQ_TORCH_CUDA)
  return "built against a libtorch without CUDA (Debian's is CPU-only): build with PyTorch's "
         "libtorch, as scripts/gpu_check.sh does";
#else
  if (!at::hasCUDA()) return "libtorch has CUDA but sees no device (driver? CUDA_VISIBLE_DEVICES?)";
  return "";
#endif
}

// A binary whose every test skipped exits with 77, which CMakeLists.txt declares as the gpu tests'
// SKIP_RETURN_CODE: ctest then lists it as Skipped, not Passed. Any pass or failure keeps gtest's
// own exit status, so a skip never hides a failure.
inline void ExitSkippedWhenNothingRan() {
  const ::testing::UnitTest& u = *::testing::UnitTest::GetInstance();
  if (u.test_to_run_count() > 0 && u.skipped_test_count() == u.test_to_run_count() &&
      u.failed_test_count() == 0) {
    std::fflush(stdout);
    std::fflush(stderr);
    std::_Exit(77);
  }
}
// gtest's UnitTest is a function-local static: made first, so the handler runs before it is gone.
inline const bool kSkipExitCodeRegistered =
    (::testing::UnitTest::GetInstance(), std::atexit(&ExitSkippedWhenNothingRan), true);

#define PTQ_SKIP_WITHOUT_GPU()                                                              \
  do {                                                                                      \
    if (const std::string why = ::ptq::gpu_testing::GpuUnavailableReason(); !why.empty()) { \
      GTEST_SKIP() << why;                                                                  \
    }                                                                                       \
  } while (0)

inline at::Device CudaDevice() { return CpuStandsIn() ? at::Device(at::kCPU) : at::Device(at::kCUDA, 0); }
inline at::Tensor Cuda(const at::Tensor& t) { return CpuStandsIn() ? t.clone() : t.to(CudaDevice()); }

// H = (2/n) X^T X of correlated random inputs (float64, CPU), as calibration gives.
inline at::Tensor RandomHessian(int64_t cols, int64_t tokens, uint64_t seed) {
  at::manual_seed(seed);
  at::Tensor mix = at::randn({cols, cols}, at::kDouble) / std::sqrt(double(cols)) +
                   at::eye(cols, at::kDouble);
  at::Tensor x = at::matmul(at::randn({tokens, cols}, at::kDouble), mix);
  return at::matmul(x.t(), x) * (2.0 / static_cast<double>(tokens));
}

// Fraction of elements that differ (both moved to the CPU first).
inline double MismatchFraction(const at::Tensor& a, const at::Tensor& b) {
  return a.cpu().ne(b.cpu()).to(at::kDouble).mean().item<double>();
}

// max |a - b| / max |b|, on the CPU in float64.
inline double MaxRelativeDiff(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor x = a.cpu().to(at::kDouble), y = b.cpu().to(at::kDouble);
  const double scale = std::max(y.abs().max().item<double>(), 1e-300);
  return (x - y).abs().max().item<double>() / scale;
}

// The float32 upper factor of (H + 1% damping)^-1, as PrepareGptq makes it.
inline at::Tensor FactorU(const at::Tensor& h) {
  auto u = InverseCholeskyUpper(h, 0.01, "test");
  EXPECT_TRUE(u.ok()) << u.status();
  return u->to(at::kFloat).contiguous();
}

inline double RelativeDiff(double a, double b) {
  return std::fabs(a - b) / std::max({std::fabs(a), std::fabs(b), 1e-300});
}

}  // namespace ptq::gpu_testing
