// GPTQ (Frantar et al., arXiv 2210.17323) exactly as docs/algorithms.md states it: dead columns,
// damping, optional act-order, upper Cholesky factor of H^-1, column loop in lazy blocks, group grids
// from the current (compensated) weights or static groups from the original ones. Tensor ops on the
// weight's device (CPU or CUDA), vectorised over rows; the column loop reads nothing back to the host.
#pragma once

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "core/quant/gptq_options.h"
#include "core/quant/quantized_linear.h"

namespace ptq {

// The upper Cholesky factor U of (H + damp)^-1, float64. On a Cholesky failure the damping is raised
// step by step (and logged) up to a limit. `what` names the layer in messages.
absl::StatusOr<at::Tensor> InverseCholeskyUpper(const at::Tensor& hessian, double damp,
                                                const std::string& what);

// What GPTQ derives from H alone: the act-order permutation, dead columns, the factor U. Row blocks
// of one layer (heads, TurboBoA's joint rows, a worker's shard) share it.
struct GptqFactor {
  at::Tensor u;     // [in, in] float32, upper Cholesky factor of (H + damp)^-1 in permuted order
  at::Tensor perm;  // [in] int64: quantization order of the columns
  at::Tensor dead;  // [in] bool: inputs that never fire
  // The grid search's weights: the damped H the column loop minimises (dead inputs set to 1), so
  // inputs with a tiny H_ii still count a little, as in the TurboBoA reference's search.
  at::Tensor diag;  // [in] float32: diag of the damped H, in permuted order
  at::Tensor h;     // [in, in] float32: the damped H, permuted; only for hessian_block
  // [in, in] float64: U before its rounding to float32, only where PrepareGptq was asked to keep it
  // and the columns are not permuted (the residual correction's (H + damp)^-1 is U^T U).
  at::Tensor u_f64;
};
absl::StatusOr<GptqFactor> PrepareGptq(const at::Tensor& hessian, const GptqOptions& options,
                                       const std::string& what, bool keep_f64_factor = false);
// Grids decided before the column loop, e.g. the refined scales of an earlier pass over the same
// rows (`--requant-passes`): used as they are, no grid is fitted. A column's grid is
// [row, g_idx[column]], so act-order's permuted groups carry over too.
struct FixedGrids {
  at::Tensor scales;  // [rows, groups] float32
  at::Tensor zeros;   // [rows, groups] float32, integer-valued
  at::Tensor g_idx;   // [in] int32
  // The grids of rows [row0, row0 + rows).
  FixedGrids Rows(int64_t row0, int64_t rows) const;
};

// GPTQ of `weight` rows with a prepared factor; QuantizedLinear::loss is left 0. The result is on
// weight's device (the factor's tensors are moved there). grids: nullptr, or fixed grids for
// exactly these rows (zeros integer-valued).
absl::StatusOr<QuantizedLinear> GptqQuantizeWithFactor(const at::Tensor& weight,
                                                       const GptqFactor& factor,
                                                       const GptqOptions& options,
                                                       const std::string& what,
                                                       const FixedGrids* grids = nullptr);

// weight: [out, in]; hessian: [in, in] (any float dtype), H = (2/n) sum x x^T.
absl::StatusOr<QuantizedLinear> GptqQuantize(const at::Tensor& weight, const at::Tensor& hessian,
                                             const GptqOptions& options,
                                             const std::string& what = "layer",
                                             const FixedGrids* grids = nullptr);

}  // namespace ptq
