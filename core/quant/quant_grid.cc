#include "core/quant/quant_grid.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/quant/fp16_scale.h"

namespace ptq {
GridParams GridFromRange(float lo, float hi, const GridOptions& o) {
  const kernels::Grid g = kernels::GridFromRange(lo, hi, o.bits, o.sym, o.min_zero, o.fp16_scales);
  return GridParams{g.scale, g.zero};
}

float SymmetricCoveringScale(float lo, float hi, const GridOptions& o) {
  lo = std::min(lo, 0.0f);
  hi = std::max(hi, 0.0f);
  if (lo == 0.0f && hi == 0.0f) {
    lo = -1.0f;
    hi = 1.0f;
  }
  const int half = (o.MaxQ() + 1) / 2;  // the zero: levels -half .. half - 1
  return std::max(hi / static_cast<float>(half - 1), -lo / static_cast<float>(half));
}

GridParams SearchGrid(float lo, float hi, float p, const GridOptions& o) {
  if (!o.sym) return GridFromRange(p * lo, p * hi, o);
  const float s = p * SymmetricCoveringScale(lo, hi, o);
  return GridParams{o.fp16_scales ? RoundScaleToFp16(s) : s,
                    static_cast<float>((o.MaxQ() + 1) / 2)};
}

int ZeroCandidates(float lo, float hi, GridParams grid, const GridOptions& o, float out[2]) {
  out[0] = grid.zero;
  lo = std::min(lo, 0.0f);
  hi = std::max(hi, 0.0f);
  if (o.sym || !o.zero_search || (lo == 0.0f && hi == 0.0f)) return 1;
  // A float16-rounded scale can put -lo/s a hair above maxq: clamp like the codes are.
  const float lowest = static_cast<float>(o.min_zero), highest = static_cast<float>(o.MaxQ());
  const float z = -lo / grid.scale;
  out[0] = std::clamp(std::floor(z), lowest, highest);
  out[1] = std::clamp(std::ceil(z), lowest, highest);
  return out[1] == out[0] ? 1 : 2;
}

GridParams FitGrid(const float* w, int64_t n, const GridOptions& o, const float* importance) {
  const bool weighted = o.hessian_search && importance != nullptr;
  float lo = std::numeric_limits<float>::infinity();
  float hi = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n; ++i) {
    lo = std::min(lo, w[i]);
    hi = std::max(hi, w[i]);
  }
  GridParams best = GridFromRange(lo, hi, o);
  if (!o.mse) return best;
  const int maxq = o.MaxQ();
  lo = std::min(lo, 0.0f);
  hi = std::max(hi, 0.0f);
  double best_err = std::numeric_limits<double>::infinity();
  const int steps = static_cast<int>(o.mse_max_shrink * o.mse_grid);
  for (int i = 0; i < steps; ++i) {
    float p = 1.0f - static_cast<float>(i) / static_cast<float>(o.mse_grid);
    GridParams g = SearchGrid(lo, hi, p, o);
    float zeros[2];
    const int candidates = ZeroCandidates(p * lo, p * hi, g, o, zeros);
    for (int c = 0; c < candidates; ++c) {
      g.zero = zeros[c];
      double err = 0;
      for (int64_t k = 0; k < n; ++k) {
        float d = DequantizeCode(QuantizeToCode(w[k], g, maxq), g) - w[k];
        err += weighted ? static_cast<double>(importance[k]) * d * d
                        : std::pow(std::fabs(static_cast<double>(d)), o.mse_norm);
      }
      if (err < best_err) {
        best_err = err;
        best = g;
      }
    }
  }
  return best;
}

}  // namespace ptq
