#include "worker/block_hessian_grid.h"

#include <ATen/ATen.h>

#include <limits>

namespace ptq::worker {

GroupGrids FitGroupGridsWithHessianBlock(const at::Tensor& w, const at::Tensor& h,
                                         const GridOptions& o) {
  const float maxq = static_cast<float>(o.MaxQ());
  at::Tensor hf = h.to(at::kFloat);
  at::Tensor lo0 = at::clamp_max(std::get<0>(w.min(1)), 0.0f);
  at::Tensor hi0 = at::clamp_min(std::get<0>(w.max(1)), 0.0f);
  GroupGrids best;
  at::Tensor best_err = at::full({w.size(0)}, std::numeric_limits<double>::infinity(), at::kDouble);
  const int steps = std::max(1, static_cast<int>(o.mse_max_shrink * o.mse_grid));
  for (int i = 0; i < steps; ++i) {
    const float p = 1.0f - static_cast<float>(i) / static_cast<float>(o.mse_grid);
    at::Tensor lo = lo0 * p, hi = hi0 * p;
    if (o.sym) {
      hi = at::maximum(-lo, hi);
      lo = at::where(lo < 0, -hi, lo);
    }
    at::Tensor empty = (lo == 0) & (hi == 0);
    lo = at::where(empty, at::full_like(lo, -1.0f), lo);
    hi = at::where(empty, at::full_like(hi, 1.0f), hi);
    at::Tensor scale = (hi - lo) / maxq;
    if (o.fp16_scales) {
      scale = scale.to(at::kHalf).to(at::kFloat);
      scale = at::where(scale > 0, scale, at::full_like(scale, 5.9604645e-8f));
    }
    at::Tensor zero = o.sym ? at::full_like(scale, static_cast<float>((o.MaxQ() + 1) / 2))
                            : at::clamp_min(at::round(-lo / scale), static_cast<float>(o.min_zero));
    at::Tensor s = scale.unsqueeze(1), z = zero.unsqueeze(1);
    at::Tensor q = at::clamp(at::round(w / s) + z, 0.0f, maxq);
    at::Tensor d = s * (q - z) - w;
    at::Tensor err = (at::matmul(d, hf) * d).sum(1).to(at::kDouble);
    at::Tensor better = err < best_err;
    if (i == 0) {
      best.scale = scale;
      best.zero = zero;
    } else {
      best.scale = at::where(better, scale, best.scale);
      best.zero = at::where(better, zero, best.zero);
    }
    best_err = at::where(better, err, best_err);
  }
  return best;
}

}  // namespace ptq::worker
