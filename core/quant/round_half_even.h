// std::nearbyint under the default rounding mode (round half to even) without a library call, so
// a loop of it stays in registers and can vectorise.
#pragma once

#include <cmath>

namespace ptq {

// Adding and subtracting 2^23 with x's sign leaves the integer nearest to x (ties to even, as 2^23
// is even) for |x| < 2^23; larger floats are integers already; NaN stays NaN. Differs from
// std::nearbyint only in the sign of a zero result (-0.3 gives +0), which a caller that multiplies
// and squares the result does not see. Needs IEEE float arithmetic without reassociation (no
// -ffast-math), as the rest of the quantizer does.
inline float RoundHalfEven(float x) {
  const float magic = std::copysign(8388608.0f, x);
  return std::fabs(x) < 8388608.0f ? (x + magic) - magic : x;
}

}  // namespace ptq
