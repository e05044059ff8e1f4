#include "core/quant/block_hessian_grid.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <limits>
#include <vector>

namespace ptq {

GroupGrids FitGroupGridsWithHessianBlock(const at::Tensor& w, const at::Tensor& h,
                                         const GridOptions& o) {
  const float maxq = static_cast<float>(o.MaxQ());
  const at::Tensor hf = h.to(w.device(), at::kFloat);
  const at::Tensor lo = at::clamp_max(w.amin(1), 0.0f);
  const at::Tensor hi = at::clamp_min(w.amax(1), 0.0f);
  const int64_t steps = std::max(1, static_cast<int>(o.mse_max_shrink * o.mse_grid));
  // Every step's grid at once ([steps, rows]) and its zeros ([zeros, steps, rows]).
  const at::Tensor p = ShrinkFactors(0, steps, o, w.options()).unsqueeze(1);
  const at::Tensor plo = p * lo, phi = p * hi;
  const GroupGrids grids = SearchGrids(lo, hi, p, o);
  const at::Tensor zeros = SearchZeros(plo, phi, grids, o);
  // The candidates in FitGrid's order, step by step, zero by zero; one product per candidate, of
  // the same [rows, g] shape whatever the number of steps, so the sums do not depend on batching.
  std::vector<at::Tensor> errors, scales, zero_list;
  for (int64_t i = 0; i < steps; ++i) {
    const at::Tensor s = grids.scale.select(0, i).unsqueeze(1);
    const at::Tensor r = at::round(w / s);
    for (int64_t c = 0; c < zeros.size(0); ++c) {
      const at::Tensor z = zeros.select(0, c).select(0, i).unsqueeze(1);
      const at::Tensor q = at::clamp(r + z, 0.0f, maxq);
      const at::Tensor d = s * (q - z) - w;
      errors.push_back((at::matmul(d, hf) * d).sum(1).to(at::kDouble));
      scales.push_back(grids.scale.select(0, i));
      zero_list.push_back(zeros.select(0, c).select(0, i));
    }
  }
  return PickSmallestError(at::stack(errors), at::stack(scales), at::stack(zero_list));
}

}  // namespace ptq
