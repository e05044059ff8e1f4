// The grids of many rows (or groups) at once, on the weights' device: the tensor counterparts of
// GridFromRange, ZeroCandidates and FitGrid (quant_grid.h). Same float steps, the same candidates in
// the same order, and the search's error sums accumulated in float64 (sequentially on the CPU), so
// they pick the grids FitGrid picks; nothing is read back to the host.
#pragma once

#include <ATen/core/Tensor.h>

#include "core/quant/quant_grid.h"

namespace ptq {

struct GroupGrids {
  at::Tensor scale;  // [...] float32 (float16-representable when options.fp16_scales)
  at::Tensor zero;   // [...] float32, integer-valued
};

// GridFromRange elementwise: lo, hi of one shape (float32) give grids of that shape.
GroupGrids GridsFromRange(const at::Tensor& lo, const at::Tensor& hi, const GridOptions& options);

// FitGrid on the last dimension: w [..., n] float32 gives grids of shape [...]. importance:
// undefined (unweighted), or per-column weights broadcastable to w (e.g. [n], or [groups, n] for w
// [rows, groups, n]), used by options.hessian_search.
GroupGrids FitGrids(const at::Tensor& w, const GridOptions& options,
                    const at::Tensor& importance = at::Tensor());

// The pieces of the search, shared with the full-block search (block_hessian_grid.h):
// The shrink factors p = 1 - i / mse_grid of steps i in [first, first + count), float32 [count].
at::Tensor ShrinkFactors(int64_t first, int64_t count, const GridOptions& options,
                         const at::TensorOptions& device);
// SearchGrid elementwise: lo, hi [batch] (lo <= 0 <= hi) and shrink factors p [count, 1] give the
// grids [count, batch] the search tries.
GroupGrids SearchGrids(const at::Tensor& lo, const at::Tensor& hi, const at::Tensor& p,
                       const GridOptions& options);
// ZeroCandidates elementwise for the range [lo, hi] (lo <= 0 <= hi) and its grid: [2, ...] (floor
// and ceil of -lo/s; the grid's zero twice for an empty range) with zero_search on an asymmetric
// grid, else [1, ...] (the grid's zero). A repeated candidate cannot win twice, so two always do.
at::Tensor SearchZeros(const at::Tensor& lo, const at::Tensor& hi, const GroupGrids& grid,
                       const GridOptions& options);
// Per position, the first candidate (along dim 0) with the smallest error, as FitGrid's strict `<`
// keeps it; a NaN error never wins. errors [K, ...] float64; scales, zeros [K, ...].
GroupGrids PickSmallestError(const at::Tensor& errors, const at::Tensor& scales,
                             const at::Tensor& zeros);

}  // namespace ptq
