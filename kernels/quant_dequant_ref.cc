#include "kernels/quant_dequant.h"

#include <string>

#include "kernels/grid_fit.h"

namespace ptq::kernels {

absl::Status QuantDequantRef(const QuantDequantArgs& a) {
  if (const char* e = QuantDequantArgsError(a)) {
    return absl::InvalidArgumentError(std::string("QuantDequantRef: ") + e);
  }
  const int maxq = (1 << a.bits) - 1;
  for (int64_t k = 0; k < a.cols; ++k) {
    const int64_t g = a.g_idx ? a.g_idx[k] : (a.group_size > 0 ? k / a.group_size : 0);
    if (g < 0 || g >= a.groups) {
      return absl::InvalidArgumentError("QuantDequantRef: g_idx entry outside 0..groups-1");
    }
  }
  for (int64_t r = 0; r < a.rows; ++r) {
    for (int64_t k = 0; k < a.cols; ++k) {
      const int64_t g = a.g_idx ? a.g_idx[k] : (a.group_size > 0 ? k / a.group_size : 0);
      const Grid grid{a.scales[r * a.groups + g], a.zeros[r * a.groups + g]};
      const float code = QuantizeCode(a.w[r * a.cols + k], grid, maxq);
      if (a.codes) a.codes[r * a.cols + k] = static_cast<uint8_t>(code);
      if (a.deq) a.deq[r * a.cols + k] = DequantizeCode(code, grid);
    }
  }
  return absl::OkStatus();
}

}  // namespace ptq::kernels
