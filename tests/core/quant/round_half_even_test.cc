// RoundHalfEven (four lanes) against std::nearbyint (the default rounding mode: half to even) on every
// half and quarter step up to 2^24, around 2^22..2^24 bit by bit, and on random bit patterns; each
// value in every lane, beside other values.
#include <gtest/gtest.h>

#include <cfenv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>

#include "core/quant/round_half_even.h"

namespace ptq {
namespace {

// Equal values (any zero sign), or both NaN, with x in each lane in turn beside three others.
bool SameRounding(float x) {
  const float others[3] = {-x, x * 0.5f + 0.25f, 2.5f};
  for (int lane = 0; lane < 4; ++lane) {
    FloatLanes v;
    for (int i = 0, o = 0; i < 4; ++i) v[i] = i == lane ? x : others[o++];
    const FloatLanes ours = RoundHalfEven(v);
    for (int i = 0; i < 4; ++i) {
      const float ref = std::nearbyint(v[i]);
      if (std::isnan(ref) ? !std::isnan(ours[i]) : ours[i] != ref) return false;
    }
  }
  return true;
}

TEST(RoundHalfEvenTest, MatchesNearbyintOnTiesAndSteps) {
  ASSERT_EQ(std::fegetround(), FE_TONEAREST);
  for (int64_t k = -(int64_t{1} << 22); k <= (int64_t{1} << 22); ++k) {
    for (float step : {0.5f, 0.25f}) {
      const float x = static_cast<float>(k) * step;
      ASSERT_TRUE(SameRounding(x)) << x;
    }
  }
  // Every float from 2^22 to 2^24 (ulp 0.5 and 1, across the 2^23 boundary), both signs.
  for (float x = 4194304.0f; x <= 16777216.0f; x = std::nextafter(x, 1e30f)) {
    ASSERT_TRUE(SameRounding(x)) << x;
    ASSERT_TRUE(SameRounding(-x)) << -x;
  }
  for (float x : {0.0f, -0.0f, 0.49999997f, -0.49999997f, 1e30f, -1e30f,
                  std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                  std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::denorm_min()}) {
    EXPECT_TRUE(SameRounding(x)) << x;
  }
}

TEST(RoundHalfEvenTest, MatchesNearbyintOnRandomBitPatterns) {
  std::mt19937 rng(7);
  for (int i = 0; i < 20'000'000; ++i) {
    const uint32_t bits = rng();
    float x;
    std::memcpy(&x, &bits, sizeof x);
    ASSERT_TRUE(SameRounding(x)) << bits;
  }
}

}  // namespace
}  // namespace ptq
