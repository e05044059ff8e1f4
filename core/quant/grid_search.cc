#include "core/quant/grid_search.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/quant/fp16_scale.h"
#include "core/quant/round_half_even.h"

namespace ptq {
namespace {

// Elements of one chunk of search candidates ([steps, zeros, rows, n]): large enough that the
// per-op overhead is small, small enough for the float64 scratch to stay in cache-sized blocks.
constexpr int64_t kSearchChunkElements = int64_t{1} << 16;

// Where a [0, 0] range was widened to [-1, 1] (GridFromRange's rule).
at::Tensor EmptyRange(const at::Tensor& lo, const at::Tensor& hi) {
  return at::clamp_max(lo, 0.0f).eq(0.0f).bitwise_and(at::clamp_min(hi, 0.0f).eq(0.0f));
}

// x / v, a true division on every device: CUDA runs a division by a host scalar as a
// multiplication by its reciprocal, which can differ from the quotient in the last bit.
at::Tensor DivideBy(const at::Tensor& x, float v) { return x / at::full({}, v, x.options()); }

// The weighted search's errors on the CPU in one pass, the same float operations in the same order
// as the tensor ops of FitGrids (so the same bits): for row b, step c and zero candidate j,
//   errors[c * zeros + j][b] = sum_k double(d_k)^2 * weight[b][k], summed k = 0, 1, ... in turn,
//   d_k = clamp(round(w[b][k] / s), -z, maxq - z) * s - w[b][k]  (float32; s = scale[c][b],
//   z = zero[c][j][b]).
// The tensor ops write each candidate's [rows, n] terms and running sums to memory and read them
// back, about fifteen passes per candidate; here they stay in registers, and round(w / s) is shared
// by the two zero candidates. Rows are split over threads, each row's sum keeps its order.
// No contraction of a product and a sum into one fused multiply-add: the tensor ops round both.
#if defined(__clang__)
#define PTQ_NO_FP_CONTRACT
#elif defined(__GNUC__)
#define PTQ_NO_FP_CONTRACT __attribute__((optimize("fp-contract=off")))
#else
#define PTQ_NO_FP_CONTRACT
#endif
// Steps of the search a row's sums run side by side, one per vector lane: independent chains hide
// the latency of the float64 additions, and each lane still adds its terms in order k = 0, 1, ...
// Every lane does exactly the scalar float steps, so the sums are the scalar sums. The float64
// lanes are held as two 16-byte halves: one SSE register each on baseline x86-64, where a 32-byte
// vector type would make GCC keep the sums in memory.
constexpr int64_t kStepsAtOnce = sizeof(FloatLanes) / sizeof(float);
static_assert(kStepsAtOnce == 4, "the float64 halves below hold two steps each");
using DoublePair = double __attribute__((vector_size(16)));

// Sums of two steps' (lanes 0-1 or 2-3) terms.
struct HalfSums {
  DoublePair low, high;
};

// h (clamp(r, lo, hi) s - w)^2 lane by lane, the float steps of the tensor search; the clamp as
// std::min(std::max(r, lo), hi), which keeps a NaN r as ATen's clamp does. `first`: the sums start
// with these terms (cumsum's first element is the term itself), else they are added.
PTQ_NO_FP_CONTRACT inline void AddWeightedSquares(FloatLanes r, FloatLanes lo, FloatLanes hi,
                                                  FloatLanes s, float w, double h, bool first,
                                                  HalfSums& sums) {
  const FloatLanes above = r < lo ? lo : r;
  const FloatLanes clamped = hi < above ? hi : above;
  const FloatLanes d = clamped * s - w;
  const DoublePair d_low =
      __builtin_convertvector(__builtin_shufflevector(d, d, 0, 1), DoublePair);
  const DoublePair d_high =
      __builtin_convertvector(__builtin_shufflevector(d, d, 2, 3), DoublePair);
  const DoublePair t_low = d_low * d_low * h, t_high = d_high * d_high * h;
  if (first) {
    sums = HalfSums{t_low, t_high};
  } else {
    sums.low += t_low;
    sums.high += t_high;
  }
}

// Rows [b0, b1) of WeightedErrorsCpu: a function of its own, as an attribute of the caller would not
// reach a lambda's body. kZeros: zero candidates per step (1 or 2).
template <int64_t kZeros>
PTQ_NO_FP_CONTRACT void WeightedErrorsRows(const float* w, const double* weight, const float* scale,
                                           const float* zero, int64_t count, int64_t batch,
                                           int64_t n, float maxq, double* errors, int64_t b0,
                                           int64_t b1) {
#if defined(__clang__)
#pragma clang fp contract(off)
#endif
  std::vector<FloatLanes> rounded(static_cast<size_t>(n));
  for (int64_t b = b0; b < b1; ++b) {
    const float* wb = w + b * n;
    const double* hb = weight + b * n;
    for (int64_t c0 = 0; c0 < count; c0 += kStepsAtOnce) {
      const int64_t steps = std::min(kStepsAtOnce, count - c0);
      FloatLanes s, low[kZeros], high[kZeros];
#pragma GCC unroll 4
      for (int64_t t = 0; t < kStepsAtOnce; ++t) {
        // A missing step repeats the last one; its sums are not stored.
        const int64_t c = c0 + std::min(t, steps - 1);
        s[t] = scale[c * batch + b];
#pragma GCC unroll 2
        for (int64_t j = 0; j < kZeros; ++j) {
          const float z = zero[(c * kZeros + j) * batch + b];
          low[j][t] = -z;
          high[j][t] = maxq - z;
        }
      }
      for (int64_t k = 0; k < n; ++k) rounded[k] = RoundHalfEven(wb[k] / s);
      // The loops over j unrolled, so the sums stay in registers.
      HalfSums sums[kZeros];
#pragma GCC unroll 2
      for (int64_t j = 0; j < kZeros; ++j) {
        AddWeightedSquares(rounded[0], low[j], high[j], s, wb[0], hb[0], /*first=*/true, sums[j]);
      }
      for (int64_t k = 1; k < n; ++k) {
#pragma GCC unroll 2
        for (int64_t j = 0; j < kZeros; ++j) {
          AddWeightedSquares(rounded[k], low[j], high[j], s, wb[k], hb[k], /*first=*/false,
                             sums[j]);
        }
      }
      for (int64_t t = 0; t < steps; ++t) {
        for (int64_t j = 0; j < kZeros; ++j) {
          const double sum = t < 2 ? sums[j].low[t] : sums[j].high[t - 2];
          errors[((c0 + t) * kZeros + j) * batch + b] = sum;
        }
      }
    }
  }
}

void WeightedErrorsCpu(const float* w, const double* weight, const float* scale, const float* zero,
                       int64_t count, int64_t zeros, int64_t batch, int64_t n, float maxq,
                       double* errors) {
  at::parallel_for(0, batch, std::max<int64_t>(1, 4096 / std::max<int64_t>(n, 1)),
                   [&](int64_t b0, int64_t b1) {
                     if (zeros == 2) {
                       WeightedErrorsRows<2>(w, weight, scale, zero, count, batch, n, maxq, errors,
                                             b0, b1);
                     } else {
                       TORCH_CHECK(zeros == 1, "WeightedErrorsCpu: ", zeros, " zero candidates");
                       WeightedErrorsRows<1>(w, weight, scale, zero, count, batch, n, maxq, errors,
                                             b0, b1);
                     }
                   });
}

}  // namespace

// Written with masked_fill rather than where (and so on below): libtorch 1.13 has meta kernels for
// these, so the no-host-read test can run the search on the meta device.
GroupGrids GridsFromRange(const at::Tensor& lo_in, const at::Tensor& hi_in, const GridOptions& o) {
  const float maxq = static_cast<float>(o.MaxQ());
  at::Tensor lo = at::clamp_max(lo_in, 0.0f);  // 0 always in range
  at::Tensor hi = at::clamp_min(hi_in, 0.0f);
  if (o.sym) {
    hi = at::maximum(-lo, hi);
    lo = (-hi).masked_fill(lo.ge(0.0f), 0.0f);  // lo < 0 ? -hi : lo, and lo is 0 there
  }
  const at::Tensor empty = lo.eq(0.0f).bitwise_and(hi.eq(0.0f));
  lo = lo.masked_fill(empty, -1.0f);
  hi = hi.masked_fill(empty, 1.0f);
  GroupGrids g;
  g.scale = DivideBy(hi - lo, maxq);
  if (o.fp16_scales) g.scale = RoundScalesToFp16(g.scale);
  g.zero = o.sym ? at::full_like(g.scale, static_cast<float>((o.MaxQ() + 1) / 2))
                 : at::round(-lo / g.scale).clamp_min(static_cast<float>(o.min_zero));
  return g;
}

at::Tensor ShrinkFactors(int64_t first, int64_t count, const GridOptions& o,
                         const at::TensorOptions& device) {
  // 1.0f - float(i) / float(mse_grid), FitGrid's float steps.
  return 1.0f - DivideBy(at::arange(first, first + count, device.dtype(at::kFloat)),
                        static_cast<float>(o.mse_grid));
}

GroupGrids SearchGrids(const at::Tensor& lo, const at::Tensor& hi, const at::Tensor& p,
                       const GridOptions& o) {
  if (!o.sym) return GridsFromRange(p * lo, p * hi, o);
  // SymmetricCoveringScale: an empty range counts as [-1, 1].
  const int half = (o.MaxQ() + 1) / 2;
  const at::Tensor empty = EmptyRange(lo, hi);
  const at::Tensor l = at::clamp_max(lo, 0.0f).masked_fill(empty, -1.0f);
  const at::Tensor h = at::clamp_min(hi, 0.0f).masked_fill(empty, 1.0f);
  const at::Tensor cover =
      at::maximum(DivideBy(h, static_cast<float>(half - 1)), DivideBy(-l, static_cast<float>(half)));
  GroupGrids g;
  g.scale = p * cover;
  if (o.fp16_scales) g.scale = RoundScalesToFp16(g.scale);
  g.zero = at::full_like(g.scale, static_cast<float>(half));
  return g;
}

at::Tensor SearchZeros(const at::Tensor& lo, const at::Tensor& hi, const GroupGrids& grid,
                       const GridOptions& o) {
  if (o.sym || !o.zero_search) return grid.zero.unsqueeze(0);
  // A float16-rounded scale can put -lo/s a hair above maxq: clamp like the codes are.
  const at::Tensor z = -lo / grid.scale;
  const float lowest = static_cast<float>(o.min_zero), highest = static_cast<float>(o.MaxQ());
  // An empty range keeps its grid's zero, the same constant wherever it occurs.
  const at::Tensor empty = EmptyRange(lo, hi);
  const float empty_zero = GridFromRange(0.0f, 0.0f, o).zero;
  return at::stack({at::floor(z).clamp(lowest, highest).masked_fill(empty, empty_zero),
                    at::ceil(z).clamp(lowest, highest).masked_fill(empty, empty_zero)});
}

GroupGrids PickSmallestError(const at::Tensor& errors, const at::Tensor& scales,
                             const at::Tensor& zeros) {
  // err < best is false for NaN: as +inf, it can only be picked where everything is (index 0).
  const at::Tensor e = errors.masked_fill(errors.ne(errors), std::numeric_limits<double>::infinity());
  const at::Tensor pick = e.argmin(0, /*keepdim=*/true);  // the first of equal minima
  return GroupGrids{at::gather(scales, 0, pick).squeeze(0), at::gather(zeros, 0, pick).squeeze(0)};
}

GroupGrids FitGrids(const at::Tensor& w_in, const GridOptions& o, const at::Tensor& importance) {
  const at::Tensor w = w_in.to(at::kFloat);
  const int64_t n = w.size(-1);
  const at::Tensor lo_w = w.amin(-1), hi_w = w.amax(-1);
  GroupGrids minmax = GridsFromRange(lo_w, hi_w, o);
  const int64_t steps = static_cast<int64_t>(o.mse_max_shrink * o.mse_grid);
  if (!o.mse || steps <= 0) return minmax;

  const std::vector<int64_t> shape = lo_w.sizes().vec();
  const int64_t batch = lo_w.numel();
  const at::Tensor w2 = w.reshape({batch, n});
  const at::Tensor lo = at::clamp_max(lo_w, 0.0f).reshape({batch});
  const at::Tensor hi = at::clamp_min(hi_w, 0.0f).reshape({batch});
  at::Tensor weight;  // [batch, n] float64, FitGrid's double(importance[k])
  if (o.hessian_search && importance.defined()) {
    weight = importance.to(w.device(), at::kDouble).expand(w.sizes()).reshape({batch, n});
  }
  const float maxq = static_cast<float>(o.MaxQ());
  const int64_t zeros_per_step = (o.sym || !o.zero_search) ? 1 : 2;
  const int64_t candidates = 1 + steps * zeros_per_step;

  // Candidate 0 is FitGrid's starting best, the min-max grid with error +inf; then step by step,
  // zero by zero, in FitGrid's order.
  const at::TensorOptions dopt = w.options().dtype(at::kDouble);
  at::Tensor errors = at::empty({candidates, batch}, dopt);
  at::Tensor scales = at::empty({candidates, batch}, w.options());
  at::Tensor zeros = at::empty({candidates, batch}, w.options());
  errors.select(0, 0).fill_(std::numeric_limits<double>::infinity());
  scales.select(0, 0).copy_(minmax.scale.reshape({batch}));
  zeros.select(0, 0).copy_(minmax.zero.reshape({batch}));

  if (weight.defined() && w.device().is_cpu()) {  // every step at once, no scratch (see above)
    const at::Tensor p = ShrinkFactors(0, steps, o, w.options()).unsqueeze(1);
    const at::Tensor plo = p * lo, phi = p * hi;  // [steps, batch]
    const GroupGrids g = SearchGrids(lo, hi, p, o);
    const at::Tensor z = SearchZeros(plo, phi, g, o).transpose(0, 1).contiguous();  // [steps, zeros, batch]
    const at::Tensor s = g.scale.contiguous();
    const at::Tensor wc = w2.contiguous(), hc = weight.contiguous();
    at::Tensor found = errors.narrow(0, 1, steps * zeros_per_step);
    WeightedErrorsCpu(wc.data_ptr<float>(), hc.data_ptr<double>(), s.data_ptr<float>(),
                      z.data_ptr<float>(), steps, zeros_per_step, batch, n, maxq,
                      found.data_ptr<double>());
    scales.narrow(0, 1, steps * zeros_per_step).view({steps, zeros_per_step, batch})
        .copy_(s.unsqueeze(1).expand({steps, zeros_per_step, batch}));
    zeros.narrow(0, 1, steps * zeros_per_step).view({steps, zeros_per_step, batch}).copy_(z);
    GroupGrids best = PickSmallestError(errors, scales, zeros);
    return GroupGrids{best.scale.reshape(shape), best.zero.reshape(shape)};
  }

  // Scratch of one chunk of steps, reused chunk after chunk: on the CPU, temporaries this large
  // are returned to the system when freed and faulted in again, which costs more than the search.
  const int64_t chunk = std::max<int64_t>(1, kSearchChunkElements / (zeros_per_step * batch * n));
  at::Tensor rounded = at::empty({chunk, 1, batch, n}, w.options());
  at::Tensor d = at::empty({chunk, zeros_per_step, batch, n}, w.options());
  at::Tensor negated = weight.defined() ? at::Tensor() : at::empty_like(d);
  at::Tensor terms = at::empty({chunk, zeros_per_step, batch, n}, dopt);
  at::Tensor sums = at::empty_like(terms);
  for (int64_t first = 0; first < steps; first += chunk) {
    const int64_t count = std::min(chunk, steps - first);
    const at::Tensor p = ShrinkFactors(first, count, o, w.options()).unsqueeze(1);
    const at::Tensor plo = p * lo, phi = p * hi;  // [count, batch]
    const GroupGrids g = SearchGrids(lo, hi, p, o);
    const at::Tensor z = SearchZeros(plo, phi, g, o).transpose(0, 1);  // [count, zeros, batch]
    const at::Tensor s = g.scale.view({count, 1, batch, 1});
    const at::Tensor zc = z.unsqueeze(-1);
    at::Tensor r = rounded.narrow(0, 0, count), dc = d.narrow(0, 0, count);
    at::Tensor tc = terms.narrow(0, 0, count), sc = sums.narrow(0, 0, count);
    // code - zero = clamp(round(w/s) + z, 0, maxq) - z = clamp(round(w/s), -z, maxq - z), exactly
    // (small integers in float); d = s (code - zero) - w as DequantizeCode(QuantizeToCode(w)) - w.
    at::div_out(r, w2, s).round_();
    at::clamp_out(dc, r, -zc, maxq - zc).mul_(s).sub_(w2);
    if (weight.defined()) {
      // double(h) * d * d: d * d is exact in float64, so one rounding either way.
      tc.copy_(dc);
      tc.mul_(tc).mul_(weight);
    } else {
      at::Tensor nc = negated.narrow(0, 0, count);
      at::maximum_out(dc, dc, at::neg_out(nc, dc));  // |d| (abs lacks a meta kernel)
      tc.copy_(dc);
      tc.pow_(o.mse_norm);
    }
    // A running sum, as FitGrid adds its terms: the CPU's cumsum is sequential.
    at::cumsum_out(sc, tc, -1);
    const int64_t row = 1 + first * zeros_per_step, rows = count * zeros_per_step;
    errors.narrow(0, row, rows).copy_(sc.select(-1, n - 1).reshape({rows, batch}));
    scales.narrow(0, row, rows).view({count, zeros_per_step, batch})
        .copy_(g.scale.unsqueeze(1).expand({count, zeros_per_step, batch}));
    zeros.narrow(0, row, rows).view({count, zeros_per_step, batch}).copy_(z);
  }
  GroupGrids best = PickSmallestError(errors, scales, zeros);
  return GroupGrids{best.scale.reshape(shape), best.zero.reshape(shape)};
}

}  // namespace ptq
