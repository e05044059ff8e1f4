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

absl::StatusOr<QuantizedLinear> BoaQuantizeHeads(const at::Tensor& weight,
                                                 const std::vector<at::Tensor>& h_out,
                                                 const BoaOptions& o, const FixedGrids* grids,
                                                 const BoaHeadSteps& steps) {
  const int64_t heads = static_cast<int64_t>(h_out.size());
  const int64_t hd = weight.size(0) / heads;
  const int64_t in = weight.size(1);
  at::Tensor w = weight.to(at::kDouble).clone().view({heads, hd, in});  // current rows, by head
  std::vector<at::Tensor> u_heads(heads), order_heads(heads);
  for (int64_t h = 0; h < heads; ++h) {
    at::Tensor head_h_out = h_out[h].to(w.device());
    if (o.act_order_rows) {
      // A stable sort, so equal diagonals keep their order and the result is reproducible.
      order_heads[h] = std::get<1>(at::sort(at::diagonal(head_h_out), /*stable=*/true, /*dim=*/0,
                                            /*descending=*/true));
      head_h_out = head_h_out.index_select(0, order_heads[h]).index_select(1, order_heads[h]);
    }
    PTQ_ASSIGN_OR_RETURN(u_heads[h], steps.factor_out(h, head_h_out));
  }
  const at::Tensor u_out = at::stack(u_heads);  // [heads, hd, hd], upper
  at::Tensor order;                             // [heads, hd]: each head's quantization order
  at::Tensor scales, zeros;                     // fixed grids by head, in that order
  if (grids != nullptr) {
    scales = grids->scales.reshape({heads, hd, -1});
    zeros = grids->zeros.reshape({heads, hd, -1});
  }
  if (o.act_order_rows) {
    order = at::stack(order_heads);
    w = at::gather(w, 1, order.unsqueeze(2).expand({heads, hd, in}));
    if (grids != nullptr) {
      const at::Tensor by_row = order.unsqueeze(2).expand({heads, hd, scales.size(2)});
      scales = at::gather(scales, 1, by_row);
      zeros = at::gather(zeros, 1, by_row);
    }
  }
  // Row block by row block, head by head. Rows are independent in GPTQ, so the heads could go side
  // by side in one call ([heads * n, in]), but a worker holding some of the heads must get the bits
  // the whole layer gets, and they were not the same: on the small benchmark model a 2-worker
  // TurboBoA job wrote another k_proj than a 1-worker job with its 4 heads side by side. OpenBLAS's
  // AVX2 ("Haswell") float32 GEMM gives different last bits for the same rows depending on how many
  // rows share the call (docs/results.md, session 14). One head per call keeps each call's shapes
  // independent of the split.
  const int64_t together = 1;
  std::vector<QuantizedLinear> blocks;
  std::vector<int64_t> source(static_cast<size_t>(heads * hd));  // row of the stacked blocks
  int64_t stacked = 0;
  for (int64_t r1 = 0; r1 < hd; r1 += o.joint_rows) {
    const int64_t r2 = std::min(r1 + o.joint_rows, hd);
    const int64_t n = r2 - r1;
    for (int64_t h0 = 0; h0 < heads; h0 += together) {
      const at::Tensor rows = w.narrow(0, h0, together).narrow(1, r1, n);  // [together, n, in]
      FixedGrids block_grids;
      if (grids != nullptr) {
        block_grids = FixedGrids{
            scales.narrow(0, h0, together).narrow(1, r1, n).reshape({together * n, -1}),
            zeros.narrow(0, h0, together).narrow(1, r1, n).reshape({together * n, -1}),
            grids->g_idx};
      }
      PTQ_ASSIGN_OR_RETURN(QuantizedLinear q,
                           steps.quantize_rows(rows.reshape({together * n, in}).to(at::kFloat),
                                               grids != nullptr ? &block_grids : nullptr));
      if (r2 < hd) {
        // Closed-form compensation of each head's remaining rows for its block's error.
        const at::Tensor e = rows - q.weight.to(at::kDouble).view({together, n, in});
        const at::Tensor u = u_out.narrow(0, h0, together);
        const at::Tensor m = u.narrow(1, r1, n).narrow(2, r1, n);  // upper [together, n, n]
        const at::Tensor x = at::linalg_solve_triangular(m.transpose(1, 2), e, /*upper=*/false);
        const at::Tensor coupling = u.narrow(1, r1, n).narrow(2, r2, hd - r2);  // [., n, rest]
        w.narrow(0, h0, together).narrow(1, r2, hd - r2).sub_(
            at::matmul(coupling.transpose(1, 2), x));
      }
      for (int64_t h = h0; h < h0 + together; ++h) {
        for (int64_t r = r1; r < r2; ++r) source[h * hd + r] = stacked + (h - h0) * n + (r - r1);
      }
      stacked += together * n;
      blocks.push_back(std::move(q));
    }
  }
  QuantizedLinear all = ConcatRows(blocks);
  at::Tensor pick = at::tensor(source, at::TensorOptions().dtype(at::kLong)).to(w.device());
  if (order.defined()) {  // rows back to their places: stored row i is quantized row inverse[i]
    pick = at::gather(pick.view({heads, hd}), 1, at::argsort(order, /*dim=*/int64_t{1})).view({-1});
  }
  all.weight = all.weight.index_select(0, pick);
  all.codes = all.codes.index_select(0, pick);
  all.scales = all.scales.index_select(0, pick);
  all.zeros = all.zeros.index_select(0, pick);
  return all;
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
  for (int64_t h = 0; h < heads; ++h) {
    if (h_out[h].size(0) != hd) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " head ", h, ": H_out is not ", hd, " x ", hd));
    }
  }
  const BoaHeadSteps steps{
      [&](int64_t h, const at::Tensor& head_h_out) {
        return InverseCholeskyUpper(head_h_out, o.damp_out, absl::StrCat(what, " head ", h));
      },
      [&](const at::Tensor& rows, const FixedGrids* block_grids) {
        return GptqQuantizeWithFactor(rows, factor, o.gptq, what, block_grids);
      }};
  PTQ_ASSIGN_OR_RETURN(QuantizedLinear out, BoaQuantizeHeads(weight, h_out, o, grids, steps));
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
