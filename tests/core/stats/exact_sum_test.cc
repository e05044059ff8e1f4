// ExactSum: any order and grouping of the same terms gives the same bits, and the value matches a
// float64 sum to the grid's resolution; non-finite terms are reported, not folded in silently.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "core/stats/exact_sum.h"

namespace ptq {
namespace {

TEST(ExactSumTest, OrderAndGroupingDoNotChangeABit) {
  at::manual_seed(3);
  std::vector<at::Tensor> terms;
  for (int i = 0; i < 12; ++i) {
    // Magnitudes over many decades, both signs: where float64 sums depend on the order.
    terms.push_back(at::randn({7, 5}, at::kDouble) * std::pow(10.0, (i % 6) - 2));
  }
  ExactSum forward({7, 5}, at::kCPU), backward({7, 5}, at::kCPU);
  for (size_t i = 0; i < terms.size(); ++i) forward.Add(terms[i]);
  for (size_t i = terms.size(); i-- > 0;) backward.Add(terms[i]);
  ExactSum a({7, 5}, at::kCPU), b({7, 5}, at::kCPU), c({7, 5}, at::kCPU);
  for (size_t i = 0; i < terms.size(); ++i) (i % 3 == 0 ? a : i % 3 == 1 ? b : c).Add(terms[i]);
  c.Merge(a);
  c.Merge(b);
  EXPECT_TRUE(at::equal(forward.Value(), backward.Value()));
  EXPECT_TRUE(at::equal(forward.Value(), c.Value()));
  EXPECT_TRUE(at::equal(forward.high(), c.high()) && at::equal(forward.low(), c.low()));
  at::Tensor reference = at::zeros({7, 5}, at::kDouble);
  for (const auto& t : terms) reference += t.to(at::kDouble);
  EXPECT_LT((forward.Value() - reference).abs().max().item<double>(), 12 * std::ldexp(1.0, -40));
  // A plain float64 sum in the two orders does differ somewhere (what this class exists for).
  at::Tensor back = at::zeros({7, 5}, at::kDouble);
  for (size_t i = terms.size(); i-- > 0;) back += terms[i].to(at::kDouble);
  EXPECT_FALSE(at::equal(reference, back));
}

TEST(ExactSumTest, LargeAndNegativeValuesAndNonFiniteTerms) {
  ExactSum s({3}, at::kCPU);
  s.Add(at::tensor({1e12, -3.5, 0.25}, at::kDouble));
  s.Add(at::tensor({1e12, -1e9, 1e-13}, at::kDouble));
  at::Tensor v = s.Value();
  EXPECT_DOUBLE_EQ(v[0].item<double>(), 2e12);
  EXPECT_DOUBLE_EQ(v[1].item<double>(), -1e9 - 3.5);
  EXPECT_NEAR(v[2].item<double>(), 0.25, 1e-12);
  EXPECT_EQ(s.NonFiniteCount(), 0);
  s.Add(at::tensor({0.0, std::nan(""), INFINITY}, at::kDouble));
  EXPECT_EQ(s.NonFiniteCount(), 2);
  EXPECT_TRUE(at::isnan(s.Value()).all().item<bool>());
}

// The CPU's fused pass against the tensor ops it replaces, limb for limb: float32 and float64 terms
// over many magnitudes (down to below the grid, up to where the high limb nears int64's range),
// exact halves of the grid (the low limb's rounding), both signs, zeros and non-finite entries.
TEST(ExactSumTest, FusedCpuPassEqualsTensorOps) {
  at::manual_seed(11);
  const int64_t n = 70000;  // several parallel chunks
  at::Tensor exponent = at::randint(-50, 40, {n}, at::kDouble);
  at::Tensor magnitudes = at::randn({n}, at::kDouble) * at::pow(2.0, exponent);
  at::Tensor halves = (at::randint(-1000, 1000, {n}, at::kDouble) + 0.5) * std::ldexp(1.0, -40);
  at::Tensor specials = at::tensor({0.0, -0.0, std::nan(""), INFINITY, -INFINITY, 1e15, -1e15,
                                    std::ldexp(1.0, -41), -std::ldexp(1.0, -41), std::ldexp(3.0, -41)},
                                   at::kDouble);
  for (at::ScalarType type : {at::kDouble, at::kFloat}) {
    for (const at::Tensor& term : {magnitudes, halves, specials}) {
      at::Tensor t = term.to(type);
      ExactSum fused(t.sizes(), at::kCPU), ops(t.sizes(), at::kCPU);
      for (int rep = 0; rep < 3; ++rep) {
        fused.Add(t);
        ops.AddWithTensorOps(t);
      }
      EXPECT_TRUE(at::equal(fused.high(), ops.high())) << type;
      EXPECT_TRUE(at::equal(fused.low(), ops.low())) << type;
      EXPECT_EQ(fused.NonFiniteCount(), ops.NonFiniteCount());
    }
  }
  // A strided (transposed) term reads its elements in the sum's order.
  at::Tensor m = at::randn({37, 53}, at::kFloat);
  ExactSum fused({53, 37}, at::kCPU), ops({53, 37}, at::kCPU);
  fused.Add(m.t());
  ops.AddWithTensorOps(m.t());
  EXPECT_TRUE(at::equal(fused.high(), ops.high()) && at::equal(fused.low(), ops.low()));
}

}  // namespace
}  // namespace ptq
