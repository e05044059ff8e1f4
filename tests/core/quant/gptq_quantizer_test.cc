// GPTQ on small random problems, checked against brute-force losses, RTN, a plain column-by-column
// GPTQ written here in float64 without lazy blocks (docs/algorithms.md, "GPTQ"), and bit for bit
// against the scalar column loop it replaced (gptq_scalar_reference.h).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "core/quant/block_hessian_grid.h"
#include "core/quant/fp16_scale.h"
#include "core/quant/gptq_quantizer.h"
#include "core/quant/rtn_quantizer.h"
#include "tests/core/quant/gptq_scalar_reference.h"

namespace ptq {
namespace {

// A correlated positive semi-definite H = (2/n) X^T X, with a few strong directions.
at::Tensor RandomHessian(int64_t cols, int64_t tokens, uint64_t seed) {
  at::manual_seed(seed);
  at::Tensor mix = at::randn({cols, cols}, at::kDouble) / std::sqrt(double(cols)) +
                   at::eye(cols, at::kDouble);
  at::Tensor x = at::matmul(at::randn({tokens, cols}, at::kDouble), mix);
  return at::matmul(x.t(), x) * (2.0 / tokens);
}

double BruteForceLoss(const at::Tensor& w, const at::Tensor& q, const at::Tensor& h) {
  at::Tensor d = (w.to(at::kDouble) - q.to(at::kDouble)).contiguous();
  at::Tensor hh = h.to(at::kDouble).contiguous();
  const int64_t rows = d.size(0), cols = d.size(1);
  const double* pd = d.data_ptr<double>();
  const double* ph = hh.data_ptr<double>();
  double loss = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < cols; ++i)
      for (int64_t j = 0; j < cols; ++j) loss += pd[r * cols + i] * ph[i * cols + j] * pd[r * cols + j];
  return loss;
}

GptqOptions Options(int bits, int64_t group, bool act_order = false) {
  GptqOptions o;
  o.grid.bits = bits;
  o.group_size = group;
  o.act_order = act_order;
  return o;
}

// The algorithm as the docs state it, one column at a time with immediate updates, in float64; the
// grid of a group is fitted from the current weights at the group's first column.
at::Tensor PlainGptq(const at::Tensor& weight, const at::Tensor& hessian, const GptqOptions& o) {
  at::Tensor w = weight.to(at::kDouble).clone();
  at::Tensor h = hessian.to(at::kDouble).clone();
  const int64_t rows = w.size(0), cols = w.size(1);
  h += at::eye(cols, at::kDouble) * (o.damp * h.diagonal().mean().item<double>());
  at::Tensor u = at::linalg_cholesky(at::cholesky_inverse(at::linalg_cholesky(h, false), false), true);
  at::Tensor q = at::zeros_like(w);
  const int64_t g = o.group_size > 0 ? o.group_size : cols;
  std::vector<GridParams> grids(rows);
  for (int64_t c = 0; c < cols; ++c) {
    if (c % g == 0) {
      at::Tensor block = w.narrow(1, c, std::min(g, cols - c)).to(at::kFloat).contiguous();
      for (int64_t r = 0; r < rows; ++r)
        grids[r] = FitGrid(block.data_ptr<float>() + r * block.size(1), block.size(1), o.grid);
    }
    for (int64_t r = 0; r < rows; ++r) {
      float wv = static_cast<float>(w[r][c].item<double>());
      q[r][c] = DequantizeCode(QuantizeToCode(wv, grids[r], o.grid.MaxQ()), grids[r]);
    }
    at::Tensor err = (w.select(1, c) - q.select(1, c)) / u[c][c];
    w.narrow(1, c, cols - c) -= at::outer(err, u[c].narrow(0, c, cols - c));
  }
  return q;
}

TEST(GptqQuantizerTest, MatchesPlainColumnByColumnGptq) {
  for (int bits : {2, 3, 4}) {
    for (int64_t group : {int64_t{-1}, int64_t{32}}) {
      at::manual_seed(bits * 10 + group);
      at::Tensor w = at::randn({24, 160});
      at::Tensor h = RandomHessian(160, 400, bits + 3);
      GptqOptions o = Options(bits, group);
      o.block_size = 64;  // several lazy blocks
      auto ours = GptqQuantize(w, h, o);
      ASSERT_TRUE(ours.ok()) << ours.status();
      at::Tensor plain = PlainGptq(w, h, o);
      // Float32 against float64 arithmetic may flip a rare rounding tie; nearly all must agree.
      const double agree = (ours->weight.to(at::kDouble) - plain).abs().lt(1e-5).to(at::kDouble).mean().item<double>();
      EXPECT_GT(agree, 0.995) << "bits " << bits << " group " << group;
      const double plain_loss = BruteForceLoss(w, plain, h);
      EXPECT_NEAR(ours->loss, plain_loss, 0.02 * plain_loss);
    }
  }
}

TEST(GptqQuantizerTest, ReportedLossEqualsBruteForceTrace) {
  at::manual_seed(5);
  at::Tensor w = at::randn({8, 48});
  at::Tensor h = RandomHessian(48, 200, 9);
  auto q = GptqQuantize(w, h, Options(3, 16));
  ASSERT_TRUE(q.ok());
  EXPECT_NEAR(q->loss, BruteForceLoss(w, q->weight, h), 1e-6 * BruteForceLoss(w, q->weight, h));
  EXPECT_NEAR(LayerLoss(w, q->weight, h), q->loss, 1e-9 * q->loss);
}

TEST(GptqQuantizerTest, LossBelowRoundToNearest) {
  for (uint64_t seed = 0; seed < 4; ++seed) {
    for (int bits : {2, 3, 4}) {
      at::manual_seed(seed);
      at::Tensor w = at::randn({32, 128});
      at::Tensor h = RandomHessian(128, 512, seed + 100);
      GptqOptions o = Options(bits, 32);
      auto g = GptqQuantize(w, h, o);
      ASSERT_TRUE(g.ok());
      QuantizedLinear r = RtnQuantize(w, o.grid, 32);
      EXPECT_LT(g->loss, BruteForceLoss(w, r.weight, h)) << "seed " << seed << " bits " << bits;
    }
  }
}

TEST(GptqQuantizerTest, IdentityHessianEqualsRoundToNearestExactly) {
  at::manual_seed(11);
  at::Tensor w = at::randn({16, 64});
  for (int64_t group : {int64_t{-1}, int64_t{16}}) {
    GptqOptions o = Options(3, group);
    auto g = GptqQuantize(w, at::eye(64, at::kDouble), o);
    ASSERT_TRUE(g.ok());
    QuantizedLinear r = RtnQuantize(w, o.grid, group);
    EXPECT_TRUE(at::equal(g->codes, r.codes));
    EXPECT_TRUE(at::equal(g->weight, r.weight));
    EXPECT_TRUE(at::equal(g->scales, r.scales));
  }
}

TEST(GptqQuantizerTest, OneColumnEqualsRoundToNearest) {
  at::manual_seed(12);
  at::Tensor w = at::randn({20, 1});
  at::Tensor h = at::full({1, 1}, 3.5, at::kDouble);
  GptqOptions o = Options(4, -1);
  auto g = GptqQuantize(w, h, o);
  ASSERT_TRUE(g.ok());
  EXPECT_TRUE(at::equal(g->weight, RtnQuantize(w, o.grid, -1).weight));
}

TEST(GptqQuantizerTest, CodesStayInRangeAndDequantizeToTheWeight) {
  at::manual_seed(13);
  at::Tensor w = at::randn({12, 96}) * 3;
  at::Tensor h = RandomHessian(96, 300, 14);
  for (int bits : {2, 3, 4, 8}) {
    for (bool act_order : {false, true}) {
      for (bool sym : {false, true}) {
        GptqOptions o = Options(bits, 32, act_order);
        o.grid.sym = sym;
        auto q = GptqQuantize(w, h, o);
        ASSERT_TRUE(q.ok());
        EXPECT_LE(q->codes.max().item<int>(), (1 << bits) - 1);
        EXPECT_GE(q->codes.min().item<int>(), 0);
        EXPECT_TRUE(at::allclose(DequantizeLinear(*q), q->weight, 0, 0));
        if (sym) EXPECT_TRUE(q->zeros.eq(float(1 << (bits - 1))).all().item<bool>());
        // Every group holds exactly group_size columns, also under act-order.
        at::Tensor counts = at::bincount(q->g_idx.to(at::kLong));
        EXPECT_TRUE(counts.eq(32).all().item<bool>());
      }
    }
  }
}

TEST(GptqQuantizerTest, StaticGroupsKeepOriginalColumnGroups) {
  at::manual_seed(15);
  at::Tensor w = at::randn({8, 64});
  at::Tensor h = RandomHessian(64, 200, 16);
  GptqOptions o = Options(4, 16, /*act_order=*/true);
  o.static_groups = true;
  auto q = GptqQuantize(w, h, o);
  ASSERT_TRUE(q.ok());
  EXPECT_TRUE(at::equal(q->g_idx, at::arange(64, at::kInt).div(16, "floor")));
  EXPECT_TRUE(at::allclose(DequantizeLinear(*q), q->weight, 0, 0));
  // Static grids come from the original weights: identical to RTN's scales.
  EXPECT_TRUE(at::equal(q->scales, RtnQuantize(w, o.grid, 16).scales));
}

TEST(GptqQuantizerTest, StaticGroupsUseTheHessianWeightedSearchInColumnOrder) {
  // `--scale-init hessian` with static groups: each group's grid is the diag(H)-weighted search on
  // the original weights, with the importances of the group's own columns (not of the columns that
  // act-order happens to quantize at those positions).
  at::manual_seed(21);
  at::Tensor w = at::randn({8, 64});
  at::Tensor h = RandomHessian(64, 200, 22);
  h.diagonal().mul_(at::rand({64}, at::kDouble) * 20 + 0.05);  // strongly unequal importances
  h = (h + h.t()) / 2;
  GptqOptions o = Options(3, 16, /*act_order=*/true);
  o.static_groups = true;
  o.grid.mse = true;
  o.grid.hessian_search = true;
  auto q = GptqQuantize(w, h, o);
  ASSERT_TRUE(q.ok()) << q.status();
  // The search weighs columns by the damped H the column loop minimises.
  at::Tensor diag = (h.diagonal() + o.damp * h.diagonal().mean()).to(at::kFloat).contiguous();
  at::Tensor wc = w.contiguous();
  int differs_from_unweighted = 0;
  for (int64_t r = 0; r < 8; ++r) {
    for (int64_t gi = 0; gi < 4; ++gi) {
      const float* wg = wc.data_ptr<float>() + r * 64 + gi * 16;
      GridParams want = FitGrid(wg, 16, o.grid, diag.data_ptr<float>() + gi * 16);
      EXPECT_EQ(q->scales[r][gi].item<float>(), want.scale) << r << " " << gi;
      EXPECT_EQ(q->zeros[r][gi].item<float>(), want.zero) << r << " " << gi;
      if (FitGrid(wg, 16, o.grid).scale != want.scale) ++differs_from_unweighted;
    }
  }
  EXPECT_GT(differs_from_unweighted, 0);  // the problem is one where the weighting matters
}

TEST(GptqQuantizerTest, StaticGroupsUseTheBlockHessianSearchInColumnOrder) {
  // `--scale-init hessian-block` with static groups (and act-order): each group's grid is the
  // search on its own columns' block of the damped H, not the diagonal one.
  at::manual_seed(25);
  at::Tensor w = at::randn({8, 64});
  at::Tensor x = at::matmul(at::randn({400, 64}, at::kDouble), at::randn({64, 64}, at::kDouble));
  at::Tensor h = at::matmul(x.t(), x) / 400;  // correlated inputs: the block differs from its diagonal
  GptqOptions o = Options(2, 16, /*act_order=*/true);
  o.static_groups = true;
  o.grid.mse = true;
  o.grid.hessian_search = true;
  o.grid.hessian_block = true;
  auto q = GptqQuantize(w, h, o);
  ASSERT_TRUE(q.ok()) << q.status();
  at::Tensor damped = h + at::eye(64, at::kDouble) * (o.damp * h.diagonal().mean());
  at::Tensor diag = damped.diagonal().to(at::kFloat).contiguous();
  int differs_from_diagonal = 0;
  for (int64_t gi = 0; gi < 4; ++gi) {
    at::Tensor wg = w.narrow(1, gi * 16, 16).contiguous();
    GroupGrids want = FitGroupGridsWithHessianBlock(
        wg, damped.narrow(0, gi * 16, 16).narrow(1, gi * 16, 16).to(at::kFloat), o.grid);
    for (int64_t r = 0; r < 8; ++r) {
      EXPECT_EQ(q->scales[r][gi].item<float>(), want.scale[r].item<float>()) << r << " " << gi;
      EXPECT_EQ(q->zeros[r][gi].item<float>(), want.zero[r].item<float>()) << r << " " << gi;
      GridParams d = FitGrid(wg.data_ptr<float>() + r * 16, 16, o.grid,
                             diag.data_ptr<float>() + gi * 16);
      if (d.scale != want.scale[r].item<float>() || d.zero != want.zero[r].item<float>()) {
        ++differs_from_diagonal;
      }
    }
  }
  EXPECT_GT(differs_from_diagonal, 0);
}

TEST(GptqQuantizerTest, FixedGridsReproduceTheRunTheyCameFrom) {
  // Handing a static-groups run its own grids (and act-order's g_idx) must give the same codes:
  // the fixed-grid path looks grids up per column exactly as static groups do. Per channel too.
  at::manual_seed(23);
  at::Tensor w = at::randn({10, 64});
  at::Tensor h = RandomHessian(64, 200, 24);
  for (int64_t group : {int64_t{16}, int64_t{-1}}) {
    GptqOptions o = Options(3, group, /*act_order=*/true);
    o.static_groups = true;
    auto first = GptqQuantize(w, h, o);
    ASSERT_TRUE(first.ok()) << first.status();
    FixedGrids grids{first->scales, first->zeros, first->g_idx};
    o.static_groups = false;  // the grids come from `grids`, not from a fit
    auto again = GptqQuantize(w, h, o, "layer", &grids);
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_TRUE(at::equal(again->codes, first->codes)) << group;
    EXPECT_TRUE(at::equal(again->scales, first->scales)) << group;
    EXPECT_TRUE(at::equal(again->g_idx, first->g_idx)) << group;
    // Different grids change the result: scales halved give other codes.
    FixedGrids halved{first->scales / 2, first->zeros, first->g_idx};
    auto other = GptqQuantize(w, h, o, "layer", &halved);
    ASSERT_TRUE(other.ok());
    EXPECT_FALSE(at::equal(other->codes, first->codes)) << group;
  }
  FixedGrids wrong{at::ones({10, 3}), at::ones({10, 3}), at::zeros({64}, at::kInt)};
  EXPECT_FALSE(GptqQuantize(w, h, Options(3, 16), "layer", &wrong).ok());
}

TEST(GptqQuantizerTest, RowsSplitInTwoGiveIdenticalResults) {
  at::manual_seed(17);
  at::Tensor w = at::randn({30, 64});
  at::Tensor h = RandomHessian(64, 256, 18);
  GptqOptions o = Options(3, 16, true);
  auto whole = GptqQuantize(w, h, o);
  auto top = GptqQuantize(w.narrow(0, 0, 13), h, o);
  auto bottom = GptqQuantize(w.narrow(0, 13, 17), h, o);
  ASSERT_TRUE(whole.ok() && top.ok() && bottom.ok());
  EXPECT_TRUE(at::equal(whole->codes, at::cat({top->codes, bottom->codes}, 0)));
  EXPECT_TRUE(at::equal(whole->scales, at::cat({top->scales, bottom->scales}, 0)));
  EXPECT_TRUE(at::equal(whole->weight, at::cat({top->weight, bottom->weight}, 0)));
}

TEST(GptqQuantizerTest, DeadColumnsAreZeroAndPartialLastGroupWorks) {
  at::manual_seed(19);
  at::Tensor w = at::randn({6, 40});
  at::Tensor h = RandomHessian(40, 100, 20);
  h.select(0, 5).zero_();
  h.select(1, 5).zero_();
  auto q = GptqQuantize(w, h, Options(4, 16));  // groups of 16, 16, 8
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->scales.size(1), 3);
  EXPECT_TRUE(q->weight.select(1, 5).eq(0).all().item<bool>());
  EXPECT_TRUE(at::allclose(DequantizeLinear(*q), q->weight, 0, 0));
}

// Every output of the tensor path equals the scalar loop's, bit for bit.
void ExpectSameAsScalarLoop(const at::Tensor& w, const at::Tensor& h, const GptqOptions& o,
                            const std::string& label, const FixedGrids* grids = nullptr) {
  auto factor = PrepareGptq(h, o, "layer");
  ASSERT_TRUE(factor.ok()) << factor.status();
  auto ours = GptqQuantizeWithFactor(w, *factor, o, "layer", grids);
  ASSERT_TRUE(ours.ok()) << ours.status();
  QuantizedLinear ref = ScalarGptqQuantizeWithFactor(w, *factor, o, grids);
  EXPECT_TRUE(at::equal(ours->codes, ref.codes)) << label;
  EXPECT_TRUE(at::equal(ours->scales, ref.scales)) << label;
  EXPECT_TRUE(at::equal(ours->zeros, ref.zeros)) << label;
  EXPECT_TRUE(at::equal(ours->g_idx, ref.g_idx)) << label;
  EXPECT_TRUE(at::equal(ours->weight, ref.weight)) << label;
  EXPECT_EQ(ours->group_size, ref.group_size) << label;
}

// A random problem with the features the loop treats specially: correlated inputs, unequal
// importances, two dead inputs, heavy-tailed weights with an all-positive row.
struct Problem {
  at::Tensor w, h;
};
Problem RandomProblem(int64_t rows, int64_t cols, uint64_t seed) {
  at::Tensor h = RandomHessian(cols, 3 * cols, seed);
  h.diagonal().mul_(at::rand({cols}, at::kDouble) * 4 + 1);  // >= 1: stays positive definite
  for (int64_t dead : {int64_t{3}, cols - 2}) {
    h.select(0, dead).zero_();
    h.select(1, dead).zero_();
  }
  at::Tensor w = at::randn({rows, cols}) * at::rand({rows, 1}) + 0.02 * at::randn({rows, cols}).pow(3);
  w[1] = w[1].abs();
  return Problem{w, h};
}

TEST(GptqQuantizerTest, MinMaxGridsEqualTheScalarLoopBitForBit) {
  // 13 rows, 80 columns: groups of 32 end in a partial group of 16; lazy blocks of 32 or 64.
  Problem p = RandomProblem(13, 80, 31);
  for (int bits : {2, 3, 4, 8}) {
    for (int64_t group : {int64_t{-1}, int64_t{16}, int64_t{32}}) {
      for (bool act_order : {false, true}) {
        for (bool static_groups : {false, true}) {
          for (bool sym : {false, true}) {
            GptqOptions o = Options(bits, group, act_order);
            o.static_groups = static_groups;
            o.grid.sym = sym;
            o.grid.min_zero = sym ? 0 : 1;
            o.block_size = bits % 2 == 0 ? 32 : 64;
            ExpectSameAsScalarLoop(p.w, p.h, o,
                                   absl::StrCat("bits ", bits, " group ", group, " act ", act_order,
                                                " static ", static_groups, " sym ", sym));
          }
        }
      }
    }
  }
}

TEST(GptqQuantizerTest, SearchedGridsEqualTheScalarLoopBitForBit) {
  // GPTQ's MSE search, the diag(H)-weighted one (with and without the zero search) and the full
  // block search, dynamic and static groups, per channel too.
  Problem p = RandomProblem(11, 72, 37);
  struct Search {
    const char* name;
    bool hessian, block, zero_search;
  };
  for (Search s : {Search{"mse", false, false, true}, Search{"mse no zero search", false, false, false},
                   Search{"hessian", true, false, true},
                   Search{"hessian no zero search", true, false, false},
                   Search{"hessian-block", true, true, true}}) {
    for (int bits : {2, 3, 4}) {
      for (int64_t group : {int64_t{-1}, int64_t{16}, int64_t{32}}) {
        for (bool act_order : {false, true}) {
          for (bool static_groups : {false, true}) {
            GptqOptions o = Options(bits, group, act_order);
            o.static_groups = static_groups;
            o.grid.mse = true;
            o.grid.hessian_search = s.hessian;
            o.grid.hessian_block = s.block;
            o.grid.zero_search = s.zero_search;
            o.grid.min_zero = 1;
            o.block_size = 32;
            ExpectSameAsScalarLoop(p.w, p.h, o,
                                   absl::StrCat(s.name, " bits ", bits, " group ", group, " act ",
                                                act_order, " static ", static_groups));
          }
        }
      }
    }
  }
  GptqOptions sym = Options(3, 16, true);
  sym.grid.sym = true;
  sym.grid.mse = true;
  sym.grid.hessian_search = true;
  ExpectSameAsScalarLoop(p.w, p.h, sym, "symmetric hessian");
}

TEST(GptqQuantizerTest, FixedGridsEqualTheScalarLoopBitForBit) {
  // Grids from another run, scaled so they are not the ones this run would fit, under act-order's
  // permuted g_idx, grouped and per channel.
  Problem p = RandomProblem(9, 64, 41);
  for (int64_t group : {int64_t{16}, int64_t{-1}}) {
    GptqOptions o = Options(3, group, /*act_order=*/true);
    auto first = GptqQuantize(p.w, p.h, o);
    ASSERT_TRUE(first.ok()) << first.status();
    FixedGrids grids{RoundScalesToFp16(first->scales * 1.3), first->zeros, first->g_idx};
    ExpectSameAsScalarLoop(p.w, p.h, o, absl::StrCat("fixed group ", group), &grids);
  }
}

TEST(GptqQuantizerTest, IndefiniteHessianRaisesDampingInsteadOfFailing) {
  at::Tensor h = at::eye(8, at::kDouble);
  h[0][0] = -0.005;  // slightly indefinite: the first damping step is not enough
  auto u = InverseCholeskyUpper(h, 0.01, "test layer");
  ASSERT_TRUE(u.ok()) << u.status();
  at::Tensor nan_h = at::full({4, 4}, std::nan(""), at::kDouble);
  auto bad = InverseCholeskyUpper(nan_h, 0.01, "nan layer");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.status().message()).find("nan layer"), std::string::npos);
  EXPECT_NE(std::string(bad.status().message()).find("non-finite"), std::string::npos);
}

}  // namespace
}  // namespace ptq
