#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <random>

#include "common/dtype.h"
#include "core/quant/quant_grid.h"

namespace ptq {
namespace {

TEST(QuantGridTest, AsymmetricMinMaxFollowsTheFormula) {
  GridOptions o;
  o.bits = 4;
  o.fp16_scales = false;
  std::vector<float> w = {-0.3f, 0.1f, 0.9f, 0.45f};
  GridParams g = FitGrid(w.data(), w.size(), o);
  EXPECT_FLOAT_EQ(g.scale, 1.2f / 15);
  EXPECT_FLOAT_EQ(g.zero, std::nearbyint(0.3f / (1.2f / 15)));
  // Range includes zero: all-positive weights get min 0.
  std::vector<float> pos = {0.2f, 0.5f};
  GridParams gp = FitGrid(pos.data(), pos.size(), o);
  EXPECT_FLOAT_EQ(gp.scale, 0.5f / 15);
  EXPECT_FLOAT_EQ(gp.zero, 0.0f);
}

TEST(QuantGridTest, SymmetricZeroIsHalfRange) {
  for (int bits : {2, 3, 4, 8}) {
    GridOptions o;
    o.bits = bits;
    o.sym = true;
    std::vector<float> w = {-0.2f, 0.7f, 0.1f};
    GridParams g = FitGrid(w.data(), w.size(), o);
    EXPECT_EQ(g.zero, float(1 << (bits - 1)));
    EXPECT_NEAR(g.scale, 1.4f / ((1 << bits) - 1), 1e-3 * g.scale);
  }
}

TEST(QuantGridTest, ScalesAreFloat16Representable) {
  GridOptions o;
  std::vector<float> w = {-0.123456f, 0.987654f};
  GridParams g = FitGrid(w.data(), 2, o);
  EXPECT_EQ(g.scale, HalfToFloat(FloatToHalf(g.scale)));
}

TEST(QuantGridTest, MseSearchNeverWorseThanMinMaxOnItsObjective) {
  std::mt19937 rng(3);
  std::student_t_distribution<float> heavy(3.0f);
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<float> w(64);
    for (float& x : w) x = heavy(rng);
    for (int bits : {2, 3, 4}) {
      GridOptions plain;
      plain.bits = bits;
      GridOptions mse = plain;
      mse.mse = true;
      auto err = [&](GridParams g) {
        double e = 0;
        for (float x : w)
          e += std::pow(std::fabs(DequantizeCode(QuantizeToCode(x, g, plain.MaxQ()), g) - x), 2.4);
        return e;
      };
      EXPECT_LE(err(FitGrid(w.data(), w.size(), mse)), err(FitGrid(w.data(), w.size(), plain)) + 1e-9);
    }
  }
}

// Brute force over the candidates of the round-zero search (the range shrunk by p, zero
// round(-lo/s)) on the search's own objective.
double BestRoundZeroError(const std::vector<float>& w, const GridOptions& o,
                          const std::function<double(GridParams)>& err) {
  float lo = 0, hi = 0;
  for (float x : w) lo = std::min(lo, x), hi = std::max(hi, x);
  double best = std::numeric_limits<double>::infinity();
  for (int i = 0; i < static_cast<int>(o.mse_max_shrink * o.mse_grid); ++i) {
    const float p = 1.0f - static_cast<float>(i) / static_cast<float>(o.mse_grid);
    best = std::min(best, err(GridFromRange(p * lo, p * hi, o)));
  }
  return best;
}

TEST(QuantGridTest, ZeroSearchShiftsTheGridAndNeverLosesToTheRoundZero) {
  // round(-p lo / (p (hi - lo) / maxq)) is the same for every p, so without trying the neighbouring
  // zero the search can only stretch the grid. With it: never worse than every round-zero candidate
  // (weighted and unweighted), strictly better on some groups, and the zero stays on the grid.
  std::mt19937 rng(5);
  std::student_t_distribution<float> heavy(4.0f);
  std::uniform_real_distribution<float> importance(0.05f, 5.0f);
  for (bool weighted : {false, true}) {
    int better = 0, shifted = 0;
    for (int trial = 0; trial < 200; ++trial) {
      std::vector<float> w(32), h(32);
      for (float& x : w) x = heavy(rng);
      for (float& x : h) x = importance(rng);
      for (int bits : {2, 3}) {
        GridOptions o;
        o.bits = bits;
        o.mse = true;
        o.hessian_search = weighted;
        o.min_zero = 1;
        auto err = [&](GridParams g) {
          double e = 0;
          for (size_t k = 0; k < w.size(); ++k) {
            const double d = DequantizeCode(QuantizeToCode(w[k], g, o.MaxQ()), g) - w[k];
            e += weighted ? h[k] * d * d : std::pow(std::fabs(d), o.mse_norm);
          }
          return e;
        };
        GridParams g = FitGrid(w.data(), w.size(), o, weighted ? h.data() : nullptr);
        ASSERT_GE(g.zero, 1.0f);
        ASSERT_LE(g.zero, static_cast<float>(o.MaxQ()));
        const double round_zero = BestRoundZeroError(w, o, err);
        EXPECT_LE(err(g), round_zero * (1 + 1e-12)) << trial;
        if (err(g) < round_zero * (1 - 1e-6)) ++better;
        float lo = 0, hi = 0;
        for (float x : w) lo = std::min(lo, x), hi = std::max(hi, x);
        if (g.zero != GridFromRange(lo, hi, o).zero) ++shifted;
        GridOptions off = o;
        off.zero_search = false;
        EXPECT_DOUBLE_EQ(err(FitGrid(w.data(), w.size(), off, weighted ? h.data() : nullptr)),
                         round_zero);
      }
    }
    EXPECT_GT(better, 20) << weighted;
    EXPECT_GT(shifted, 20) << weighted;
  }
}

TEST(QuantGridTest, CodesClampToTheGrid) {
  GridParams g{0.1f, 3.0f};
  EXPECT_EQ(QuantizeToCode(100.0f, g, 15), 15.0f);
  EXPECT_EQ(QuantizeToCode(-100.0f, g, 15), 0.0f);
  EXPECT_EQ(QuantizeToCode(0.0f, g, 15), 3.0f);
  EXPECT_FLOAT_EQ(DequantizeCode(5.0f, g), 0.2f);
}

}  // namespace
}  // namespace ptq
