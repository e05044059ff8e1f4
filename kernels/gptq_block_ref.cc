#include "kernels/gptq_block.h"

#include <algorithm>
#include <limits>
#include <vector>

#include "kernels/grid_fit.h"

namespace ptq::kernels {

absl::Status GptqBlockRef(const GptqBlockArgs& a) {
  if (const char* e = GptqBlockArgsError(a)) {
    return absl::InvalidArgumentError(std::string("GptqBlockRef: ") + e);
  }
  const int maxq = (1 << a.bits) - 1;
  const int64_t gc = a.group_cols > 0 ? std::min(a.group_cols, a.count) : a.count;
  for (int64_t r = 0; r < a.rows; ++r) {
    float* w = a.w + r * a.ldw;
    Grid grid{1.0f, 0.0f};
    for (int64_t i = 0; i < a.count; ++i) {
      if (i % gc == 0) {
        const int64_t gi = i / gc;
        if (a.fit_grids) {
          float lo = std::numeric_limits<float>::infinity();
          float hi = -std::numeric_limits<float>::infinity();
          for (int64_t k = i; k < std::min(i + gc, a.count); ++k) {
            lo = std::min(lo, w[k]);
            hi = std::max(hi, w[k]);
          }
          grid = GridFromRange(lo, hi, a.bits, a.sym, a.min_zero, a.fp16_scales);
          a.scales[r * a.ldg + gi] = grid.scale;
          a.zeros[r * a.ldg + gi] = grid.zero;
        } else {
          grid = Grid{a.scales[r * a.ldg + gi], a.zeros[r * a.ldg + gi]};
        }
      }
      const float code = QuantizeCode(w[i], grid, maxq);
      const float deq = DequantizeCode(code, grid);
      const float e = (w[i] - deq) / a.u[i * a.ldu + i];
      a.q[r * a.ldq + i] = deq;
      if (a.codes != nullptr) a.codes[r * a.ldq + i] = static_cast<uint8_t>(code);
      a.err[r * a.lde + i] = e;
      const float* urow = a.u + i * a.ldu;
      for (int64_t j = i + 1; j < a.count; ++j) w[j] -= e * urow[j];
    }
  }
  return absl::OkStatus();
}

}  // namespace ptq::kernels
