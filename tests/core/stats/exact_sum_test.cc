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

}  // namespace
}  // namespace ptq
