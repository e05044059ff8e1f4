// BoA and TurboBoA (arXiv 2406.13474, 2602.04929; docs/algorithms.md): GPTQ in the input direction
// plus compensation in the output direction through a per-head Kronecker factor H_out.
// Loss per head: tr(dW H_in dW^T H_out). Rows of a head are quantized `joint_rows` at a time (GPTQ's
// column loop with H_in, grids fitted on the rows' current, already compensated weights); the
// remaining rows of the head then absorb the block's error E in closed form:
//   W[r2:] -= U_out[r1:r2, r2:]^T (U_out[r1:r2, r1:r2])^-T E,   U_out = chol_upper(H_out^-1).
// joint_rows = 1 is BoA; larger blocks are TurboBoA's speed-up. Heads are independent: the unit a
// scheduler shards.
// With act_order_rows, a head's rows are permuted (weight rows, H_out rows and columns, fixed grids)
// before the loop and the result's rows put back after it.
#pragma once

#include <functional>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "core/quant/gptq_quantizer.h"

namespace ptq {

struct BoaOptions {
  GptqOptions gptq;
  int64_t joint_rows = 16;  // rows quantized together; 1 = BoA
  double damp_out = 0.01;   // damping of H_out, relative to its mean diagonal
  // Quantize each head's rows by decreasing diag(H_out) (GPTQ's act-order in the output
  // direction; the TurboBoA reference's act_order_row): the rows whose error costs most go first,
  // while the most rows remain to absorb it. Rows keep their place in the result.
  bool act_order_rows = false;
};

// weight: [heads * head_dim, in]; h_in: [in, in]; h_out: one [head_dim, head_dim] per head.
// grids: nullptr, or fixed grids for all rows of `weight` (an earlier pass's refined scales).
// factor: PrepareGptq(h_in, options.gptq) when the caller has it already (layers sharing h_in);
// nullptr: computed here.
// Host reads happen outside BoA's own loop only: in GPTQ and the Cholesky factors' checks
// (gptq_quantizer.h) and for QuantizedLinear::loss at the end.
absl::StatusOr<QuantizedLinear> BoaQuantize(const at::Tensor& weight, const at::Tensor& h_in,
                                            const std::vector<at::Tensor>& h_out,
                                            const BoaOptions& options, const std::string& what,
                                            const FixedGrids* grids = nullptr,
                                            const GptqFactor* factor = nullptr);

// BoaQuantize's loop over all heads, with the two steps that are not BoA's own passed in: the
// factor U_out = chol_upper((H_out + damp)^-1) of head h, and GPTQ of a row block (on its fixed
// grids, or nullptr). Heads are independent, so block k (rows k*N .. k*N + N - 1 in each head's
// order) of every head is one GPTQ call on [heads * N, in] rows, head by head, and the compensation
// runs for all heads at once. BoA's part (row orders, row blocks, compensation, rows put back)
// reads nothing back to the host; the seam lets a test run it where any host read fails.
// weight: [heads * head_dim, in]; grids: nullptr or fixed grids for all its rows. Returns the rows
// in their stored order.
struct BoaHeadSteps {
  std::function<absl::StatusOr<at::Tensor>(int64_t head, const at::Tensor& h_out)> factor_out;
  std::function<absl::StatusOr<QuantizedLinear>(const at::Tensor& rows, const FixedGrids* grids)>
      quantize_rows;
};
absl::StatusOr<QuantizedLinear> BoaQuantizeHeads(const at::Tensor& weight,
                                                 const std::vector<at::Tensor>& h_out,
                                                 const BoaOptions& options, const FixedGrids* grids,
                                                 const BoaHeadSteps& steps);

// W_v with BoA's value-block Hessians: the rows of key/value head h quantized by GPTQ with their own
// H_in (core/stats/value_statistics.h). weight: [kv_heads * head_dim, in]. The loss is the sum of the
// heads' losses. Act-order with per-head column orders cannot be stored in one g_idx: refused unless
// static groups keep g_idx in column order.
absl::StatusOr<QuantizedLinear> BoaValueQuantize(const at::Tensor& weight,
                                                 const std::vector<at::Tensor>& h_in_per_head,
                                                 const GptqOptions& options, const std::string& what,
                                                 const FixedGrids* grids = nullptr);

// sum over heads of tr((W - Q)_h H_in (W - Q)_h^T H_out_h): the objective BoA minimises.
double KroneckerLoss(const at::Tensor& weight, const at::Tensor& quantized, const at::Tensor& h_in,
                     const std::vector<at::Tensor>& h_out);
// The same as a 0-dim float64 tensor on the weight's device, nothing read back (the same bits).
at::Tensor KroneckerLossOnDevice(const at::Tensor& weight, const at::Tensor& quantized,
                                 const at::Tensor& h_in, const std::vector<at::Tensor>& h_out);

}  // namespace ptq
