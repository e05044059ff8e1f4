#include "core/quant/rtn_quantizer.h"

#include <ATen/ATen.h>

#include <vector>

#include "core/quant/grid_search.h"

namespace ptq {

QuantizedLinear RtnQuantize(const at::Tensor& weight, const GridOptions& grid, int64_t group_size) {
  const at::Tensor w = weight.to(at::kFloat).contiguous();
  const int64_t rows = w.size(0);
  const int64_t cols = w.size(1);
  const int64_t g = (group_size <= 0 || group_size >= cols) ? cols : group_size;
  const int64_t full = cols / g;  // whole groups; a shorter last one is fitted on its own
  std::vector<at::Tensor> scales, zeros;
  if (full > 0) {
    GroupGrids grids = FitGrids(w.narrow(1, 0, full * g).reshape({rows, full, g}), grid);
    scales.push_back(grids.scale);
    zeros.push_back(grids.zero);
  }
  if (full * g < cols) {
    GroupGrids last = FitGrids(w.narrow(1, full * g, cols - full * g), grid);
    scales.push_back(last.scale.unsqueeze(1));
    zeros.push_back(last.zero.unsqueeze(1));
  }
  QuantizedLinear out;
  out.scales = at::cat(scales, 1);
  out.zeros = at::cat(zeros, 1);
  out.g_idx = at::div(at::arange(cols, w.options().dtype(at::kInt)), g, "floor");
  out.group_size = g;
  out.bits = grid.bits;
  out.sym = grid.sym;
  // Each column's grid, then QuantizeToCode and DequantizeCode's float steps.
  const at::Tensor column_group = out.g_idx.to(at::kLong);
  const at::Tensor s = at::gather(out.scales, 1, column_group.unsqueeze(0).expand({rows, cols}));
  const at::Tensor z = at::gather(out.zeros, 1, column_group.unsqueeze(0).expand({rows, cols}));
  const at::Tensor code = at::clamp(at::round(w / s) + z, 0, grid.MaxQ());
  out.weight = s * (code - z);
  out.codes = code.to(at::kByte);
  return out;
}

}  // namespace ptq
