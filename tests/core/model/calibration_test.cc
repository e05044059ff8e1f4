#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "core/model/calibration.h"
#include "core/stats/hessian_accumulator.h"

namespace ptq {
namespace {

TEST(CalibrationTest, WindowsAreSeededSlicesOfTheText) {
  std::vector<int32_t> tokens(1000);
  for (int i = 0; i < 1000; ++i) tokens[i] = i % 256;
  auto a = SampleCalibrationWindows(tokens, 16, 50, 42);
  auto b = SampleCalibrationWindows(tokens, 16, 50, 42);
  auto c = SampleCalibrationWindows(tokens, 16, 50, 43);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_TRUE(at::equal(*a, *b));
  EXPECT_FALSE(at::equal(*a, *c));
  for (int64_t w = 0; w < 16; ++w) {
    // Consecutive tokens of the source (i % 256 increases by one, wrapping at 256).
    at::Tensor row = (*a)[w];
    at::Tensor diff = (row.narrow(0, 1, 49) - row.narrow(0, 0, 49)).remainder(256);
    EXPECT_TRUE(diff.eq(1).all().item<bool>());
  }
}

TEST(CalibrationTest, TextShorterThanOneWindowIsAnError) {
  auto r = SampleCalibrationWindows(std::vector<int32_t>(10, 1), 4, 11, 0);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string(r.status().message()).find("shorter than one window"), std::string::npos);
}

TEST(HessianAccumulatorTest, ShardSumsEqualWholeBatch) {
  at::manual_seed(0);
  at::Tensor x = at::randn({6, 10, 12});
  HessianAccumulator whole(12), a(12), b(12);
  whole.Add(x);
  a.Add(x.narrow(0, 0, 2));
  b.Add(x.narrow(0, 2, 4));
  a.Merge(b);
  EXPECT_EQ(a.count(), 60);
  // Products are formed in float32 per call, so shards agree to float32 rounding.
  EXPECT_TRUE(at::allclose(a.Hessian(), whole.Hessian(), 1e-5, 1e-5));
  // The same batches in another order and grouping give the same bits (ExactSum).
  HessianAccumulator c(12), d(12), e(12);
  c.Add(x.narrow(0, 4, 2));
  d.Add(x.narrow(0, 0, 2));
  d.Add(x.narrow(0, 2, 2));
  e.Add(x.narrow(0, 2, 2));
  e.Add(x.narrow(0, 0, 2));
  e.Add(x.narrow(0, 4, 2));
  c.Merge(d);
  EXPECT_TRUE(at::equal(c.Hessian(), e.Hessian()));
  at::Tensor flat = x.reshape({60, 12}).to(at::kDouble);
  EXPECT_TRUE(at::allclose(whole.Hessian(), at::matmul(flat.t(), flat) * (2.0 / 60), 1e-5, 1e-7));
}

}  // namespace
}  // namespace ptq
