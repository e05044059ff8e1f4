// std::nearbyint under the default rounding mode (round half to even) on L floats at once, without
// a library call, so a loop of it stays in vector registers (GCC/Clang vector extensions: any
// target; four lanes are one SSE register on baseline x86-64, eight and sixteen need AVX2 and
// AVX-512 code).
#pragma once

#include <cstdint>

namespace ptq {

// Spelled out per width: GCC drops a vector_size that depends on a template parameter.
template <int L>
struct VectorLanes;
template <>
struct VectorLanes<4> {
  using Float = float __attribute__((vector_size(16)));
  using Int = int32_t __attribute__((vector_size(16)));
};
template <>
struct VectorLanes<8> {
  using Float = float __attribute__((vector_size(32)));
  using Int = int32_t __attribute__((vector_size(32)));
};
template <>
struct VectorLanes<16> {
  using Float = float __attribute__((vector_size(64)));
  using Int = int32_t __attribute__((vector_size(64)));
};

using FloatLanes = VectorLanes<4>::Float;
using IntLanes = VectorLanes<4>::Int;

// Adding and subtracting 2^23 with x's sign leaves the integer nearest to x (ties to even, as 2^23
// is even) for |x| < 2^23; larger floats are integers already; NaN stays NaN. Differs from
// std::nearbyint only in the sign of a zero result (-0.3 gives +0), which a caller that multiplies
// and squares the result does not see. Needs IEEE float arithmetic without reassociation (no
// -ffast-math), as the rest of the quantizer does. Always inlined, so a caller compiled for a wider
// target gets it in that target's instructions.
template <int L>
inline __attribute__((always_inline)) typename VectorLanes<L>::Float RoundHalfEvenLanes(
    typename VectorLanes<L>::Float x) {
  using F = typename VectorLanes<L>::Float;
  using I = typename VectorLanes<L>::Int;
  // A cast between vector types of one size reinterprets the bits (GCC and Clang).
  const I bits = (I)x;
  const F magic = (F)((bits & static_cast<int32_t>(0x80000000u)) | 0x4B000000);
  const F abs = (F)(bits & 0x7FFFFFFF);
  const F rounded = (x + magic) - magic;
  return abs < 8388608.0f ? rounded : x;
}

inline FloatLanes RoundHalfEven(FloatLanes x) { return RoundHalfEvenLanes<4>(x); }

}  // namespace ptq
