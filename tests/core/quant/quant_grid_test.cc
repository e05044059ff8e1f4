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

TEST(QuantGridTest, SymmetricCoveringScaleIsTheSmallestWhoseLevelsSpanTheRange) {
  // Checked on the grid's end levels, not the formula: at the covering scale the lowest level
  // (code 0) and the highest (code 2^b - 1) enclose every weight; a hair smaller, some weight lies
  // beyond them. The sides differ: 2^(b-1) levels below the zero, 2^(b-1) - 1 above.
  std::mt19937 rng(11);
  std::student_t_distribution<float> heavy(3.0f);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<float> w(32);
    for (float& x : w) x = heavy(rng);
    if (trial % 4 == 1) for (float& x : w) x = std::fabs(x);  // one-signed rows
    if (trial % 4 == 2) for (float& x : w) x = -std::fabs(x);
    float lo = 0, hi = 0;
    for (float x : w) lo = std::min(lo, x), hi = std::max(hi, x);
    for (int bits : {2, 3, 4, 8}) {
      GridOptions o;
      o.bits = bits;
      o.sym = true;
      auto spans = [&](float s) {
        const GridParams g{s, static_cast<float>(1 << (bits - 1))};
        return DequantizeCode(0, g) <= lo && hi <= DequantizeCode(static_cast<float>(o.MaxQ()), g);
      };
      const float cover = SymmetricCoveringScale(lo, hi, o);
      EXPECT_TRUE(spans(cover * (1 + 1e-6f))) << trial << " " << bits;
      EXPECT_FALSE(spans(cover * (1 - 1e-4f))) << trial << " " << bits;
    }
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

TEST(QuantGridTest, SymmetricSearchReachesTheCoveringScaleForEitherSign) {
  // GPTQ's symmetric range 2 max|w| / (2^b - 1) mirrors the larger side: a positive maximum is
  // clipped at (2^(b-1) - 1) s, and a one-signed positive row keeps only the lower half of the levels
  // (its range [0, hi] with the zero in the middle). The search shrinks the covering scale instead:
  // on its own objective it beats every candidate of GPTQ's shrunk ranges on such rows by far.
  std::mt19937 rng(12);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  for (int bits : {3, 4}) {
    GridOptions o;
    o.bits = bits;
    o.sym = true;
    o.mse = true;
    std::vector<float> w(64);
    for (float& x : w) x = uniform(rng);  // all positive
    auto err = [&](GridParams g) {
      double e = 0;
      for (float x : w) e += std::pow(std::fabs(DequantizeCode(QuantizeToCode(x, g, o.MaxQ()), g) - x), 2.4);
      return e;
    };
    const double gptq_family = BestRoundZeroError(w, o, err);
    const GridParams g = FitGrid(w.data(), w.size(), o);
    EXPECT_EQ(g.zero, static_cast<float>(1 << (bits - 1)));
    EXPECT_LT(err(g), 0.1 * gptq_family) << bits;
    // Unsearched, the symmetric grid stays GPTQ's: 2 max|w| / (2^b - 1) on the mirrored range.
    GridOptions plain = o;
    plain.mse = false;
    plain.fp16_scales = false;
    std::vector<float> mixed = {-0.2f, 0.7f, 0.1f};
    EXPECT_FLOAT_EQ(FitGrid(mixed.data(), 3, plain).scale, 1.4f / o.MaxQ());
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
