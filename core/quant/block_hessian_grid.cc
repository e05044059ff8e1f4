#include "core/quant/block_hessian_grid.h"

#include "core/quant/fp16_scale.h"

#include <ATen/ATen.h>

#include <limits>
#include <vector>

namespace ptq {

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
    if (o.fp16_scales) scale = RoundScalesToFp16(scale);
    // The zeros FitGrid tries (ZeroCandidates): round alone, or floor then ceil of -lo/s.
    std::vector<at::Tensor> zeros;
    if (o.sym) {
      zeros.push_back(at::full_like(scale, static_cast<float>((o.MaxQ() + 1) / 2)));
    } else if (!o.zero_search) {
      zeros.push_back(at::clamp_min(at::round(-lo / scale), static_cast<float>(o.min_zero)));
    } else {
      // Rows whose range was empty keep round(-lo/s), as ZeroCandidates does.
      at::Tensor z = -lo / scale;
      at::Tensor rounded = at::clamp_min(at::round(z), static_cast<float>(o.min_zero));
      zeros.push_back(at::where(empty, rounded, at::clamp(at::floor(z), o.min_zero, maxq)));
      zeros.push_back(at::where(empty, rounded, at::clamp(at::ceil(z), o.min_zero, maxq)));
    }
    at::Tensor s = scale.unsqueeze(1);
    for (const at::Tensor& zero : zeros) {
      at::Tensor z = zero.unsqueeze(1);
      at::Tensor q = at::clamp(at::round(w / s) + z, 0.0f, maxq);
      at::Tensor d = s * (q - z) - w;
      at::Tensor err = (at::matmul(d, hf) * d).sum(1).to(at::kDouble);
      at::Tensor better = err < best_err;
      if (!best.scale.defined()) {
        best.scale = scale;
        best.zero = zero;
      } else {
        best.scale = at::where(better, scale, best.scale);
        best.zero = at::where(better, zero, best.zero);
      }
      best_err = at::where(better, err, best_err);
    }
  }
  return best;
}

}  // namespace ptq
