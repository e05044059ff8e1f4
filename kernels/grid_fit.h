// The b-bit grid of core/quant/quant_grid.h in a form both host references and CUDA kernels compile:
// GridFromRange without the MSE search, the code and its dequantized value. Kept in one place so
// the kernels and their references cannot drift apart; RoundToHalf is float16 round-to-nearest-even.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define PTQ_HD __host__ __device__ __forceinline__
#else
#define PTQ_HD inline
#endif

namespace ptq::kernels {

PTQ_HD float BitsToFloat(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}
PTQ_HD uint32_t FloatToBits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

// float -> nearest float16 (ties to even) -> float, for finite non-negative scales below 65520.
PTQ_HD float RoundToHalf(float x) {
  const uint32_t u = FloatToBits(x);
  const int exp = static_cast<int>((u >> 23) & 0xff) - 127;
  // float16 keeps 10 mantissa bits for normal numbers (exp >= -14); below that the spacing is 2^-24.
  const int drop = exp >= -14 ? 13 : 13 + (-14 - exp);
  if (drop >= 32) return 0.0f;
  if (exp >= -14) {
    const uint32_t half_ulp = 1u << (drop - 1);
    const uint32_t mask = (1u << drop) - 1;
    uint32_t r = u + half_ulp - 1 + ((u >> drop) & 1);
    return BitsToFloat(r & ~mask);
  }
  // Subnormal in float16: round to a multiple of 2^-24 (exact in float arithmetic).
  const float step = 5.9604645e-8f;  // 2^-24
  const float k = x / step;          // exact: a power-of-two division
  float lo = static_cast<float>(static_cast<int64_t>(k));
  float rem = k - lo;
  if (rem > 0.5f || (rem == 0.5f && (static_cast<int64_t>(lo) & 1))) lo += 1.0f;
  return lo * step;
}

// A group scale as a GPTQ checkpoint stores it: float16, and never 0 (a collapsed range gets 2^-24,
// float16's smallest subnormal).
inline constexpr float kMinFp16Scale = 5.9604645e-8f;
PTQ_HD float RoundScaleToFp16(float scale) {
  const float r = RoundToHalf(scale);
  return r > 0.0f ? r : kMinFp16Scale;
}

PTQ_HD float RoundHalfEven(float x) {
#if defined(__CUDA_ARCH__)
  return rintf(x);
#else
  return __builtin_rintf(x);  // the default rounding mode: to nearest, ties to even
#endif
}

struct Grid {
  float scale;
  float zero;
};

// As core/quant/quant_grid.cc's GridFromRange: 0 always in range, symmetric ranges mirrored, a scale
// rounded to float16 never 0.
PTQ_HD Grid GridFromRange(float lo, float hi, int bits, bool sym, int min_zero, bool fp16_scales) {
  const int maxq = (1 << bits) - 1;
  lo = lo < 0.0f ? lo : 0.0f;
  hi = hi > 0.0f ? hi : 0.0f;
  if (sym) {
    hi = -lo > hi ? -lo : hi;
    if (lo < 0) lo = -hi;
  }
  if (lo == 0.0f && hi == 0.0f) {
    lo = -1.0f;
    hi = 1.0f;
  }
  Grid g;
  g.scale = (hi - lo) / static_cast<float>(maxq);
  if (fp16_scales) g.scale = RoundScaleToFp16(g.scale);
  if (sym) {
    g.zero = static_cast<float>((maxq + 1) / 2);
  } else {
    const float z = RoundHalfEven(-lo / g.scale);
    const float mz = static_cast<float>(min_zero);
    g.zero = z > mz ? z : mz;
  }
  return g;
}

PTQ_HD float QuantizeCode(float w, Grid g, int maxq) {
  const float q = RoundHalfEven(w / g.scale) + g.zero;
  return q < 0.0f ? 0.0f : (q > static_cast<float>(maxq) ? static_cast<float>(maxq) : q);
}
PTQ_HD float DequantizeCode(float code, Grid g) { return g.scale * (code - g.zero); }

}  // namespace ptq::kernels
