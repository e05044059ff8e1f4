// The weighted grid search's errors on the CPU in one pass (FitGrids' fast path, grid_search.cc):
// for row b, step c and zero candidate j,
//   errors[c * zeros + j][b] = sum_k double(d_k)^2 * weight[b][k], summed k = 0, 1, ... in turn,
//   d_k = clamp(round(w[b][k] / s), -z, maxq - z) * s - w[b][k]  (float32; s = scale[c][b],
//   z = zero[c][j][b]),
// the same float operations in the same order as FitGrids' tensor ops, so the same bits. The tensor
// ops write each candidate's [rows, n] terms and running sums to memory and read them back, about
// fifteen passes per candidate; here they stay in registers, and round(w / s) is shared by the two
// zero candidates. Rows are split over threads; each row's sums keep their order.
#pragma once

#include <cstdint>

namespace ptq {

// zeros: zero candidates per step (1 or 2). w [batch, n], weight [batch, n], scale [count, batch],
// zero [count, zeros, batch], errors [count * zeros, batch].
void WeightedErrorsCpu(const float* w, const double* weight, const float* scale, const float* zero,
                       int64_t count, int64_t zeros, int64_t batch, int64_t n, float maxq,
                       double* errors);

// Steps the pass runs side by side, one per float lane: 16 where the CPU has AVX-512, 8 with AVX2,
// else 4. Every width gives the same sums (each lane does the scalar steps in the scalar order).
int WeightedErrorsLanes();

// Tests: run at most `lanes` (4, 8 or 16) side by side, to check each width against the scalar
// search on one machine; 0 restores the CPU's widest. Returns the width now in use.
int LimitWeightedErrorsLanesForTesting(int lanes);

}  // namespace ptq
