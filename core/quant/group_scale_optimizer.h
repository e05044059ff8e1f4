// Stage 2 of two-stage group-scale optimisation (arXiv 2602.02126): with the integer codes fixed,
// refine every group scale of every row by coordinate descent on the layer loss
// tr((W - W_hat) H (W - W_hat)^T). For one group g of a row, with v = (q - z) on the group's columns
// and r the row's residual, the loss is quadratic in the scale step d and minimal at
//   d = v^T H r / v^T H v.
// Steps are rounded to float16-representable scales (what the checkpoint stores) and a step that the
// rounding would make worse is skipped, so the loss never increases.
//
// Everything runs on the tensors' device and nothing is read back to the host: decisions are masks
// (a skipped step is a step of 0), and the loss comes back as a 0-dim float64 tensor on the device.
// Callers that want the number call .item<double>() once.
#pragma once

#include <vector>

#include <ATen/core/Tensor.h>

#include "core/quant/quantized_linear.h"

namespace ptq {

// target: [out, in] the weights the quantized layer should reproduce; hessian: [in, in].
// Updates q.scales and q.weight in place; returns the loss after refinement (0-dim float64).
at::Tensor RefineGroupScales(QuantizedLinear& q, const at::Tensor& target, const at::Tensor& hessian,
                             int iterations);

// RefineGroupScales on each head's rows with that head's Hessian (W_v with BoA's value-block
// Hessians). Rows are independent given their H, so heads are refined apart. Returns the summed loss.
at::Tensor RefineGroupScalesPerHead(QuantizedLinear& q, const at::Tensor& target,
                                    const std::vector<at::Tensor>& h_in_per_head, int iterations);

// The same on BoA's per-head Kronecker loss sum_h tr(H_out_h dW_h H_in dW_h^T) (q_proj / k_proj):
// rows of a head are coupled through H_out, so scales are updated one (row, group) at a time,
//   d = v^T [H_out R H_in]_{r,g} / (H_out_rr v^T H_in_gg v),
// with the same float16 rounding and no-increase guard. h_out: one [head_dim, head_dim] per head.
// Returns the Kronecker loss after refinement.
at::Tensor RefineGroupScalesKronecker(QuantizedLinear& q, const at::Tensor& target,
                                      const at::Tensor& h_in, const std::vector<at::Tensor>& h_out,
                                      int iterations);

// LayerLoss (quantized_linear.h) as a 0-dim float64 tensor on the inputs' device: the same operations,
// so the same bits, without the read-back.
at::Tensor LayerLossOnDevice(const at::Tensor& weight, const at::Tensor& quantized,
                             const at::Tensor& hessian);

// The columns of each group of q (g_idx == g), ascending, without reading g_idx back: every producer
// of g_idx (GPTQ's dynamic, static and fixed grids, RTN) gives group g group_size columns, the last
// group the rest, so a stable sort of g_idx lists them group by group. On CPU the layout is checked.
std::vector<at::Tensor> GroupColumns(const QuantizedLinear& q);

}  // namespace ptq
