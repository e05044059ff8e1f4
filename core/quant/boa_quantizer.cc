#include "core/quant/boa_quantizer.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace ptq {

at::Tensor KroneckerLossOnDevice(const at::Tensor& weight, const at::Tensor& quantized,
                                 const at::Tensor& h_in, const std::vector<at::Tensor>& h_out) {
  const int64_t heads = static_cast<int64_t>(h_out.size());
  const int64_t hd = weight.size(0) / heads;
  at::Tensor d = weight.to(at::kDouble) - quantized.to(at::kDouble);
  at::Tensor hi = h_in.to(d.options());
  at::Tensor loss = at::zeros({}, d.options());  // summed head by head, as the host sum did
  for (int64_t h = 0; h < heads; ++h) {
    at::Tensor dh = d.narrow(0, h * hd, hd);
    loss = loss + (at::matmul(at::matmul(h_out[h].to(d.options()), dh), hi) * dh).sum();
  }
  return loss;
}

double KroneckerLoss(const at::Tensor& weight, const at::Tensor& quantized, const at::Tensor& h_in,
                     const std::vector<at::Tensor>& h_out) {
  return KroneckerLossOnDevice(weight, quantized, h_in, h_out).item<double>();
}

absl::StatusOr<QuantizedLinear> BoaQuantizeHead(const at::Tensor& weight, const at::Tensor& h_out,
                                                const BoaOptions& o, const FixedGrids* grids,
                                                const BoaHeadSteps& steps) {
  const int64_t hd = weight.size(0);
  at::Tensor w = weight.to(at::kDouble).clone();  // current rows of the head
  at::Tensor head_h_out = h_out.to(w.device());
  FixedGrids head_grids;
  if (grids != nullptr) head_grids = *grids;
  at::Tensor order;  // quantization order of the head's rows (undefined: as stored)
  if (o.act_order_rows) {
    // A stable sort, so equal diagonals keep their order and the result is reproducible.
    order = std::get<1>(at::sort(at::diagonal(head_h_out), /*stable=*/true, /*dim=*/0,
                                 /*descending=*/true));
    w = w.index_select(0, order);
    head_h_out = head_h_out.index_select(0, order).index_select(1, order);
    if (grids != nullptr) {
      head_grids.scales = head_grids.scales.index_select(0, order);
      head_grids.zeros = head_grids.zeros.index_select(0, order);
    }
  }
  PTQ_ASSIGN_OR_RETURN(at::Tensor u_out, steps.factor_out(head_h_out));
  std::vector<QuantizedLinear> head_blocks;
  for (int64_t r1 = 0; r1 < hd; r1 += o.joint_rows) {
    const int64_t r2 = std::min(r1 + o.joint_rows, hd);
    at::Tensor rows = w.narrow(0, r1, r2 - r1);
    FixedGrids block_grids;
    if (grids != nullptr) block_grids = head_grids.Rows(r1, r2 - r1);
    PTQ_ASSIGN_OR_RETURN(QuantizedLinear q, steps.quantize_rows(rows.to(at::kFloat),
                                                                grids != nullptr ? &block_grids : nullptr));
    if (r2 < hd) {
      // Closed-form compensation of the remaining rows for the whole block's error.
      at::Tensor e = rows - q.weight.to(at::kDouble);           // [n, in]
      at::Tensor m = u_out.narrow(0, r1, r2 - r1).narrow(1, r1, r2 - r1);  // upper [n, n]
      at::Tensor x = at::linalg_solve_triangular(m.t(), e, /*upper=*/false);
      at::Tensor coupling = u_out.narrow(0, r1, r2 - r1).narrow(1, r2, hd - r2);  // [n, rest]
      w.narrow(0, r2, hd - r2).sub_(at::matmul(coupling.t(), x));
    }
    head_blocks.push_back(std::move(q));
  }
  QuantizedLinear head_q = ConcatRows(head_blocks);
  if (order.defined()) {  // rows back to their places
    const at::Tensor inverse = at::argsort(order);
    head_q.weight = head_q.weight.index_select(0, inverse);
    head_q.codes = head_q.codes.index_select(0, inverse);
    head_q.scales = head_q.scales.index_select(0, inverse);
    head_q.zeros = head_q.zeros.index_select(0, inverse);
  }
  return head_q;
}

absl::StatusOr<QuantizedLinear> BoaQuantize(const at::Tensor& weight, const at::Tensor& h_in,
                                            const std::vector<at::Tensor>& h_out,
                                            const BoaOptions& o, const std::string& what,
                                            const FixedGrids* grids, const GptqFactor* shared) {
  const int64_t heads = static_cast<int64_t>(h_out.size());
  if (heads == 0 || weight.size(0) % heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", weight.size(0),
                                                   " output rows do not split into ", heads, " heads"));
  }
  const int64_t hd = weight.size(0) / heads;
  if (o.joint_rows < 1) return absl::InvalidArgumentError("joint rows must be at least 1");
  GptqFactor factor;
  if (shared != nullptr) {
    factor = *shared;
  } else {
    PTQ_ASSIGN_OR_RETURN(factor, PrepareGptq(h_in, o.gptq, what));
  }
  std::vector<QuantizedLinear> blocks;
  for (int64_t h = 0; h < heads; ++h) {
    const std::string head_name = absl::StrCat(what, " head ", h);
    if (h_out[h].size(0) != hd) {
      return absl::InvalidArgumentError(absl::StrCat(head_name, ": H_out is not ", hd, " x ", hd));
    }
    const BoaHeadSteps steps{
        [&](const at::Tensor& head_h_out) {
          return InverseCholeskyUpper(head_h_out, o.damp_out, head_name);
        },
        [&](const at::Tensor& rows, const FixedGrids* block_grids) {
          return GptqQuantizeWithFactor(rows, factor, o.gptq, head_name, block_grids);
        }};
    FixedGrids head_grids;
    if (grids != nullptr) head_grids = grids->Rows(h * hd, hd);
    PTQ_ASSIGN_OR_RETURN(QuantizedLinear head_q,
                         BoaQuantizeHead(weight.narrow(0, h * hd, hd), h_out[h], o,
                                         grids != nullptr ? &head_grids : nullptr, steps));
    blocks.push_back(std::move(head_q));
  }
  QuantizedLinear out = ConcatRows(blocks);
  out.loss = LayerLoss(weight, out.weight, h_in);  // comparable with GPTQ's per-layer loss
  return out;
}

absl::StatusOr<QuantizedLinear> BoaValueQuantize(const at::Tensor& weight,
                                                 const std::vector<at::Tensor>& h_in_per_head,
                                                 const GptqOptions& o, const std::string& what,
                                                 const FixedGrids* grids) {
  const int64_t heads = static_cast<int64_t>(h_in_per_head.size());
  if (heads == 0 || weight.size(0) % heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", weight.size(0),
                                                   " output rows do not split into ", heads, " heads"));
  }
  if (o.act_order && !o.static_groups) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": act-order with per-head value Hessians gives each head its own column order, which "
              "one g_idx cannot store (use --static-groups or --no-value-block)"));
  }
  const int64_t hd = weight.size(0) / heads;
  std::vector<QuantizedLinear> parts;
  double loss = 0;
  for (int64_t h = 0; h < heads; ++h) {
    FixedGrids head_grids;
    if (grids != nullptr) head_grids = grids->Rows(h * hd, hd);
    PTQ_ASSIGN_OR_RETURN(QuantizedLinear q,
                         GptqQuantize(weight.narrow(0, h * hd, hd), h_in_per_head[h], o,
                                      absl::StrCat(what, " head ", h),
                                      grids != nullptr ? &head_grids : nullptr));
    loss += q.loss;
    parts.push_back(std::move(q));
  }
  QuantizedLinear out = ConcatRows(parts);
  out.loss = loss;
  return out;
}

}  // namespace ptq
