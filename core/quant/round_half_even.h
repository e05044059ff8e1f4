// std::nearbyint under the default rounding mode (round half to even) on four floats at once,
// without a library call, so a loop of it stays in vector registers (GCC/Clang vector extensions:
// any target; one SSE register on baseline x86-64).
#pragma once

#include <cstdint>

namespace ptq {

using FloatLanes = float __attribute__((vector_size(16)));
using IntLanes = int32_t __attribute__((vector_size(16)));

// Adding and subtracting 2^23 with x's sign leaves the integer nearest to x (ties to even, as 2^23
// is even) for |x| < 2^23; larger floats are integers already; NaN stays NaN. Differs from
// std::nearbyint only in the sign of a zero result (-0.3 gives +0), which a caller that multiplies
// and squares the result does not see. Needs IEEE float arithmetic without reassociation (no
// -ffast-math), as the rest of the quantizer does.
inline FloatLanes RoundHalfEven(FloatLanes x) {
  // A cast between vector types of one size reinterprets the bits (GCC and Clang).
  const IntLanes bits = (IntLanes)x;
  const FloatLanes magic = (FloatLanes)((bits & static_cast<int32_t>(0x80000000u)) | 0x4B000000);
  const FloatLanes abs = (FloatLanes)(bits & 0x7FFFFFFF);
  const FloatLanes rounded = (x + magic) - magic;
  return abs < 8388608.0f ? rounded : x;
}

}  // namespace ptq
