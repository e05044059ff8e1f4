#include "core/quant/grid_search.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/quant/fp16_scale.h"
#include "core/quant/weighted_errors_cpu.h"

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
