// The uniform b-bit grid every method shares (docs/algorithms.md, "Grid"):
// q = clamp(round(w / s) + z, 0, 2^b - 1), w_hat = s * (q - z).
#pragma once

#include <cmath>
#include <cstdint>

namespace ptq {

struct GridOptions {
  int bits = 4;
  bool sym = false;
  // GPTQ's "MSE" search: shrink the range by 1, 0.99, ... down to 1 - max_shrink and keep the one with
  // the smallest sum |w_hat - w|^norm. With sym the zero is fixed, so only the scale is searched, from
  // the sign-aware covering scale down (SearchGrid).
  bool mse = false;
  double mse_norm = 2.4;
  int mse_grid = 100;
  double mse_max_shrink = 0.8;
  // With mse and per-column importances given to FitGrid (GPTQ passes diag H): minimise
  // sum_k H_kk (w_hat - w)^2 instead, the input-aware scale choice of two-stage stage 1 (diagonal of
  // the group's Hessian block) and TurboBoA's Hessian-weighted grid. `--scale-init hessian`.
  bool hessian_search = false;
  // With hessian_search, grouped GPTQ: weigh a group's error by its full Hessian block d^T H_gg d
  // (core/quant/block_hessian_grid.h) instead of the diagonal. `--scale-init hessian-block`.
  bool hessian_block = false;
  // Asymmetric searches try both integer zeros around -lo/s at every shrink step (the TurboBoA
  // reference's search). round(-p*lo / (p*(hi-lo)/maxq)) does not depend on p, so shrinking alone
  // only stretches the grid about a fixed zero; the neighbouring zero shifts it by one step, which
  // at 2-3 bits is a large part of the range.
  bool zero_search = true;
  // Round scales to float16 when fitting, so quantization uses exactly the scales a GPTQ checkpoint
  // stores and the written model reproduces the measured one.
  bool fp16_scales = true;
  // Smallest asymmetric zero point. The classic GPTQ checkpoint stores zero - 1, so a zero of 0
  // cannot be written (it would spill into the neighbouring field); writers of that format set 1.
  int min_zero = 0;

  int MaxQ() const { return (1 << bits) - 1; }
};

struct GridParams {
  float scale = 1.0f;
  float zero = 0.0f;  // integer-valued
};

// Fits the grid of one row or group from its n current weights.
// importance: n per-column weights used by options.hessian_search (nullptr: unweighted).
// FitGrids (grid_search.h) fits many rows at once on their device and picks the same grids.
GridParams FitGrid(const float* w, int64_t n, const GridOptions& options,
                   const float* importance = nullptr);

// Grid of a given range (min-max, 0 included as in GPTQ's reference), before any search.
GridParams GridFromRange(float lo, float hi, const GridOptions& options);

// The smallest scale whose symmetric grid s * [-2^(b-1), 2^(b-1) - 1] holds [lo, hi] (0 included;
// an empty range counts as [-1, 1], GridFromRange's rule): max(hi / (2^(b-1) - 1), -lo / 2^(b-1)).
// GridFromRange's symmetric (GPTQ's) scale 2 max|w| / (2^b - 1) mirrors the larger side instead,
// so it clips a positive maximum and leaves a level unused beyond a negative one.
float SymmetricCoveringScale(float lo, float hi, const GridOptions& options);

// The grid a search tries at shrink p for the range [lo, hi]: GridFromRange(p lo, p hi), or for a
// symmetric grid the scale p * SymmetricCoveringScale (float16-rounded) with the zero 2^(b-1).
GridParams SearchGrid(float lo, float hi, float p, const GridOptions& options);

// The zeros a search tries for GridFromRange(lo, hi): round(-lo/s) alone, or with zero_search and an
// asymmetric grid floor and ceil of it, clamped to [min_zero, maxq]. Returns how many (1 or 2).
int ZeroCandidates(float lo, float hi, GridParams grid, const GridOptions& options, float out[2]);

inline float QuantizeToCode(float w, GridParams g, int maxq) {
  float q = std::nearbyint(w / g.scale) + g.zero;  // round half to even, as torch.round
  return q < 0.0f ? 0.0f : (q > static_cast<float>(maxq) ? static_cast<float>(maxq) : q);
}
inline float DequantizeCode(float q, GridParams g) { return g.scale * (q - g.zero); }

}  // namespace ptq
