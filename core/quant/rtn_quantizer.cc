#include "core/quant/rtn_quantizer.h"

#include <ATen/ATen.h>

namespace ptq {

QuantizedLinear RtnQuantize(const at::Tensor& weight, const GridOptions& grid, int64_t group_size) {
  at::Tensor w = weight.to(at::kFloat).contiguous();
  const int64_t rows = w.size(0);
  const int64_t cols = w.size(1);
  const int64_t g = (group_size <= 0 || group_size >= cols) ? cols : group_size;
  const int64_t groups = (cols + g - 1) / g;  // the last group may be shorter
  const int maxq = grid.MaxQ();
  QuantizedLinear out;
  out.weight = at::empty_like(w);
  out.codes = at::empty({rows, cols}, at::kByte);
  out.scales = at::empty({rows, groups}, at::kFloat);
  out.zeros = at::empty({rows, groups}, at::kFloat);
  out.g_idx = at::arange(cols, at::kInt).div(g, "floor");
  out.group_size = g;
  out.bits = grid.bits;
  out.sym = grid.sym;
  const float* pw = w.data_ptr<float>();
  float* pq = out.weight.data_ptr<float>();
  uint8_t* pc = out.codes.data_ptr<uint8_t>();
  float* ps = out.scales.data_ptr<float>();
  float* pz = out.zeros.data_ptr<float>();
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t gi = 0; gi < groups; ++gi) {
      const float* src = pw + r * cols + gi * g;
      const int64_t len = std::min(g, cols - gi * g);
      GridParams p = FitGrid(src, len, grid);
      ps[r * groups + gi] = p.scale;
      pz[r * groups + gi] = p.zero;
      for (int64_t k = 0; k < len; ++k) {
        float code = QuantizeToCode(src[k], p, maxq);
        pc[r * cols + gi * g + k] = static_cast<uint8_t>(code);
        pq[r * cols + gi * g + k] = DequantizeCode(code, p);
      }
    }
  }
  return out;
}

}  // namespace ptq
