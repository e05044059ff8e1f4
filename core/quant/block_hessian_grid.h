// Stage 1 of two-stage group scales with the group's full Hessian block (arXiv 2602.02126; TurboBoA's
// Hessian-weighted grid): for every row of a group, search the range shrink p in 1, 0.99, ... that
// minimises d^T H_gg d, d = Q(w) - w, instead of the diagonal-only sum_k H_kk d_k^2 (FitGrid). The
// off-diagonal terms see that errors of correlated inputs cancel or add. All rows of a group at
// once (one [rows, g] x [g, g] product per candidate), with the candidates of FitGrids
// (grid_search.h), on the weights' device.
#pragma once

#include <ATen/core/Tensor.h>

#include "core/quant/grid_search.h"
#include "core/quant/quant_grid.h"

namespace ptq {

// w: [rows, g] float32, the group's current weights; h: [g, g], its Hessian block.
GroupGrids FitGroupGridsWithHessianBlock(const at::Tensor& w, const at::Tensor& h,
                                         const GridOptions& options);

}  // namespace ptq
