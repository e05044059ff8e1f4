#include "core/quant/weighted_errors_cpu.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include "core/quant/round_half_even.h"

// Built with -ffp-contract=off (CMakeLists.txt): a product and a sum are never fused into one
// multiply-add, which the AVX2/AVX-512 targets below could otherwise emit; the tensor ops round
// both.
#if defined(__clang__)
#pragma clang fp contract(off)
#endif

namespace ptq {
namespace {

// L float lanes; the float64 sums of a step run in two halves of L / 2 doubles, each one register
// (a double vector of L lanes would make GCC keep the sums in memory on baseline x86-64).
template <int L>
struct Lanes;
template <>
struct Lanes<4> {
  using Float = VectorLanes<4>::Float;
  using HalfFloat = float __attribute__((vector_size(8)));
  using Double = double __attribute__((vector_size(16)));
};
template <>
struct Lanes<8> {
  using Float = VectorLanes<8>::Float;
  using HalfFloat = float __attribute__((vector_size(16)));
  using Double = double __attribute__((vector_size(32)));
};
template <>
struct Lanes<16> {
  using Float = VectorLanes<16>::Float;
  using HalfFloat = float __attribute__((vector_size(32)));
  using Double = double __attribute__((vector_size(64)));
};

#define PTQ_ALWAYS_INLINE inline __attribute__((always_inline))

// L floats from memory (no alignment needed).
template <int L>
PTQ_ALWAYS_INLINE typename Lanes<L>::Float LoadLanes(const float* p) {
  typename Lanes<L>::Float v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <int L>
struct HalfSums {
  typename Lanes<L>::Double low, high;
};

// h (clamp(r, lo, hi) s - w)^2 lane by lane; the clamp as std::min(std::max(r, lo), hi), which
// keeps a NaN r as ATen's clamp does. `first`: the sums start with these terms, else they are added.
template <int L>
PTQ_ALWAYS_INLINE void AddWeightedSquares(typename Lanes<L>::Float r, typename Lanes<L>::Float lo,
                                          typename Lanes<L>::Float hi, typename Lanes<L>::Float s,
                                          float w, double h, bool first, HalfSums<L>& sums) {
  using F = typename Lanes<L>::Float;
  using H = typename Lanes<L>::HalfFloat;
  using D = typename Lanes<L>::Double;
  const F above = r < lo ? lo : r;
  const F clamped = hi < above ? hi : above;
  const F d = clamped * s - w;
  H half_low, half_high;
  std::memcpy(&half_low, &d, sizeof(H));
  std::memcpy(&half_high, reinterpret_cast<const char*>(&d) + sizeof(H), sizeof(H));
  const D d_low = __builtin_convertvector(half_low, D);
  const D d_high = __builtin_convertvector(half_high, D);
  const D t_low = d_low * d_low * h, t_high = d_high * d_high * h;
  if (first) {
    sums = HalfSums<L>{t_low, t_high};
  } else {
    sums.low += t_low;
    sums.high += t_high;
  }
}

// Rows [b0, b1), L steps at a time. kZeros: zero candidates per step (1 or 2).
template <int L, int64_t kZeros>
PTQ_ALWAYS_INLINE void RowsBody(const float* w, const double* weight, const float* scale,
                                const float* zero, int64_t count, int64_t batch, int64_t n,
                                float maxq, double* errors, int64_t b0, int64_t b1) {
  using F = typename Lanes<L>::Float;
  // Plain floats, read and written a vector at a time: a std::vector of over-aligned vector
  // elements, instantiated outside this target, crashed.
  std::vector<float> rounded(static_cast<size_t>(n * L));
  for (int64_t b = b0; b < b1; ++b) {
    const float* wb = w + b * n;
    const double* hb = weight + b * n;
    for (int64_t c0 = 0; c0 < count; c0 += L) {
      const int64_t steps = std::min<int64_t>(L, count - c0);
      F s, low[kZeros], high[kZeros];
      for (int64_t t = 0; t < L; ++t) {
        // A missing step repeats the last one; its sums are not stored.
        const int64_t c = c0 + std::min(t, steps - 1);
        s[t] = scale[c * batch + b];
        for (int64_t j = 0; j < kZeros; ++j) {
          const float z = zero[(c * kZeros + j) * batch + b];
          low[j][t] = -z;
          high[j][t] = maxq - z;
        }
      }
      for (int64_t k = 0; k < n; ++k) {
        const F r = RoundHalfEvenLanes<L>(wb[k] / s);
        std::memcpy(rounded.data() + k * L, &r, sizeof(F));
      }
      // The loops over j unrolled, so the sums stay in registers.
      HalfSums<L> sums[kZeros];
#pragma GCC unroll 2
      for (int64_t j = 0; j < kZeros; ++j) {
        AddWeightedSquares<L>(LoadLanes<L>(rounded.data()), low[j], high[j], s, wb[0], hb[0],
                              /*first=*/true, sums[j]);
      }
      for (int64_t k = 1; k < n; ++k) {
#pragma GCC unroll 2
        for (int64_t j = 0; j < kZeros; ++j) {
          AddWeightedSquares<L>(LoadLanes<L>(rounded.data() + k * L), low[j], high[j], s, wb[k],
                                hb[k], /*first=*/false, sums[j]);
        }
      }
      for (int64_t t = 0; t < steps; ++t) {
        for (int64_t j = 0; j < kZeros; ++j) {
          const double sum = t < L / 2 ? sums[j].low[t] : sums[j].high[t - L / 2];
          errors[((c0 + t) * kZeros + j) * batch + b] = sum;
        }
      }
    }
  }
}

using RowsFunction = void (*)(const float*, const double*, const float*, const float*, int64_t,
                              int64_t, int64_t, float, double*, int64_t, int64_t);

// One function per width and zero count, each compiled for the instructions its width needs (the
// body is inlined into it, so it is generated for that target).
#define PTQ_ROWS(name, target, lanes, zeros)                                                    \
  target void name(const float* w, const double* weight, const float* scale, const float* zero, \
                   int64_t count, int64_t batch, int64_t n, float maxq, double* errors,         \
                   int64_t b0, int64_t b1) {                                                    \
    RowsBody<lanes, zeros>(w, weight, scale, zero, count, batch, n, maxq, errors, b0, b1);      \
  }
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define PTQ_TARGET_AVX2 __attribute__((target("avx2")))
#define PTQ_TARGET_AVX512 __attribute__((target("avx512f")))
#define PTQ_HAVE_WIDE_LANES 1
PTQ_ROWS(Rows8Zeros1, PTQ_TARGET_AVX2, 8, 1)
PTQ_ROWS(Rows8Zeros2, PTQ_TARGET_AVX2, 8, 2)
PTQ_ROWS(Rows16Zeros1, PTQ_TARGET_AVX512, 16, 1)
PTQ_ROWS(Rows16Zeros2, PTQ_TARGET_AVX512, 16, 2)
#endif
PTQ_ROWS(Rows4Zeros1, , 4, 1)
PTQ_ROWS(Rows4Zeros2, , 4, 2)

int WidestLanes() {
#if defined(PTQ_HAVE_WIDE_LANES)
  if (__builtin_cpu_supports("avx512f")) return 16;
  if (__builtin_cpu_supports("avx2")) return 8;
#endif
  return 4;
}

std::atomic<int> g_lane_limit{0};  // 0: none

}  // namespace

int WeightedErrorsLanes() {
  const int widest = WidestLanes();
  const int limit = g_lane_limit.load();
  return limit > 0 ? std::min(widest, limit) : widest;
}

int LimitWeightedErrorsLanesForTesting(int lanes) {
  g_lane_limit.store(lanes);
  return WeightedErrorsLanes();
}

void WeightedErrorsCpu(const float* w, const double* weight, const float* scale, const float* zero,
                       int64_t count, int64_t zeros, int64_t batch, int64_t n, float maxq,
                       double* errors) {
  TORCH_CHECK(zeros == 1 || zeros == 2, "WeightedErrorsCpu: ", zeros, " zero candidates");
  RowsFunction rows = zeros == 2 ? Rows4Zeros2 : Rows4Zeros1;
#if defined(PTQ_HAVE_WIDE_LANES)
  switch (WeightedErrorsLanes()) {
    case 16: rows = zeros == 2 ? Rows16Zeros2 : Rows16Zeros1; break;
    case 8: rows = zeros == 2 ? Rows8Zeros2 : Rows8Zeros1; break;
    default: break;
  }
#endif
  at::parallel_for(0, batch, std::max<int64_t>(1, 4096 / std::max<int64_t>(n, 1)),
                   [&](int64_t b0, int64_t b1) {
                     rows(w, weight, scale, zero, count, batch, n, maxq, errors, b0, b1);
                   });
}

}  // namespace ptq
