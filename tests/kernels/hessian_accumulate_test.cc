// X^T X accumulation: the reference against float64 ATen (and its fixed chunk order written out),
// determinism and accumulation across calls, and the CUDA kernel against the reference bit for bit.
#include "kernels/hessian_accumulate.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <vector>

#include "tests/kernels/cuda_test_util.h"

namespace ptq::kernels {
namespace {

// float32 products summed over 32-token chunks: relative error ~ 32 * 2^-24 of the chunk sums.
constexpr double kFloat64RelTol = 1e-5;

at::Tensor RandomTokens(int64_t tokens, int64_t dim, uint64_t seed) {
  at::manual_seed(seed);
  return (at::randn({tokens, dim}, at::kFloat) + 0.3f).contiguous();
}

at::Tensor RunRef(const at::Tensor& x, at::Tensor sum) {
  HessianAccumulateArgs a{x.size(0), x.size(1), x.data_ptr<float>(), sum.data_ptr<double>()};
  absl::Status s = HessianAccumulateRef(a);
  EXPECT_TRUE(s.ok()) << s;
  return sum;
}

TEST(HessianAccumulateRefTest, MatchesFloat64Product) {
  for (auto [tokens, dim] : {std::pair<int64_t, int64_t>{1, 1}, {31, 5}, {100, 70}, {333, 129}}) {
    at::Tensor x = RandomTokens(tokens, dim, tokens + dim);
    at::Tensor got = RunRef(x, at::zeros({dim, dim}, at::kDouble));
    at::Tensor want = at::matmul(x.to(at::kDouble).t(), x.to(at::kDouble));
    EXPECT_LE((got - want).abs().max().item<double>(),
              kFloat64RelTol * want.abs().max().item<double>())
        << tokens << " tokens, dim " << dim;
    EXPECT_TRUE(at::equal(got, got.t()));
  }
}

TEST(HessianAccumulateRefTest, ChunkOrderIsTheDocumentedOne) {
  at::Tensor x = RandomTokens(75, 6, 2);
  at::Tensor got = RunRef(x, at::zeros({6, 6}, at::kDouble));
  // Chunks [0,32), [32,64), [64,75): each a float32 sum in token order, added up in float64.
  at::Tensor want = at::zeros({6, 6}, at::kDouble);
  for (int64_t t0 = 0; t0 < 75; t0 += 32) {
    at::Tensor p = at::zeros({6, 6}, at::kFloat);
    for (int64_t t = t0; t < std::min<int64_t>(t0 + 32, 75); ++t) {
      p += at::outer(x[t], x[t]);
    }
    want += p.to(at::kDouble);
  }
  EXPECT_TRUE(at::equal(got, want));
}

TEST(HessianAccumulateRefTest, AddsIntoTheExistingSumAndRejectsNegativeSizes) {
  at::Tensor x = RandomTokens(40, 9, 3);
  at::Tensor start = at::full({9, 9}, 0.5, at::kDouble);
  at::Tensor got = RunRef(x, start.clone());
  at::Tensor alone = RunRef(x, at::zeros({9, 9}, at::kDouble));
  EXPECT_TRUE(at::equal(got, start + alone));
  HessianAccumulateArgs bad{-1, 9, x.data_ptr<float>(), got.data_ptr<double>()};
  EXPECT_EQ(HessianAccumulateRef(bad).code(), absl::StatusCode::kInvalidArgument);
}

#if defined(PTQ_HAVE_CUDA)
TEST(HessianAccumulateCudaTest, MatchesReferenceBitForBit) {
  if (std::string why = ptq::testing::CudaUnavailableReason(); !why.empty()) GTEST_SKIP() << why;
  for (auto [tokens, dim] : {std::pair<int64_t, int64_t>{1, 1}, {33, 63}, {64, 64}, {100, 65},
                             {257, 200}, {2048, 256}}) {
    SCOPED_TRACE(::testing::Message() << tokens << " tokens, dim " << dim);
    at::Tensor x = RandomTokens(tokens, dim, tokens * 7 + dim);
    at::Tensor start = at::rand({dim, dim}, at::kDouble);
    start = (start + start.t()).contiguous();
    at::Tensor want = RunRef(x, start.clone());
    std::vector<float> hx(x.data_ptr<float>(), x.data_ptr<float>() + x.numel());
    std::vector<double> hs(start.data_ptr<double>(), start.data_ptr<double>() + start.numel());
    ptq::testing::DeviceBuffer<float> dx(hx);
    ptq::testing::DeviceBuffer<double> ds(hs);
    ptq::testing::TestStream stream;
    ASSERT_TRUE(HessianAccumulateCuda(HessianAccumulateArgs{tokens, dim, dx.get(), ds.get()}, stream.get()).ok());
    ASSERT_EQ(stream.Sync(), cudaSuccess);
    std::vector<double> got = ds.Host();
    std::vector<double> w(want.data_ptr<double>(), want.data_ptr<double>() + want.numel());
    EXPECT_EQ(got, w);
  }
}
#else
TEST(HessianAccumulateCudaTest, MatchesReferenceBitForBit) {
  GTEST_SKIP() << ptq::testing::CudaUnavailableReason();
}
#endif

}  // namespace
}  // namespace ptq::kernels
