#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "common/dtype.h"
#include "worker/quant_grid.h"

namespace ptq::worker {
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

TEST(QuantGridTest, CodesClampToTheGrid) {
  GridParams g{0.1f, 3.0f};
  EXPECT_EQ(QuantizeToCode(100.0f, g, 15), 15.0f);
  EXPECT_EQ(QuantizeToCode(-100.0f, g, 15), 0.0f);
  EXPECT_EQ(QuantizeToCode(0.0f, g, 15), 3.0f);
  EXPECT_FLOAT_EQ(DequantizeCode(5.0f, g), 0.2f);
}

}  // namespace
}  // namespace ptq::worker
