#include "core/quant/group_scale_optimizer.h"

#include "core/quant/fp16_scale.h"

#include <ATen/ATen.h>

#include <algorithm>

namespace ptq {

double RefineGroupScales(QuantizedLinear& q, const at::Tensor& target, const at::Tensor& hessian,
                         int iterations) {
  at::Tensor h = hessian.to(at::kDouble);
  const int64_t groups = q.scales.size(1);
  at::Tensor g_idx = q.g_idx.to(at::kLong);
  // v = codes - zero of each column's group, float64 [out, in].
  at::Tensor v = q.codes.to(at::kDouble) - q.zeros.to(at::kDouble).index_select(1, g_idx);
  at::Tensor scales = q.scales.to(at::kDouble).clone();
  at::Tensor residual = target.to(at::kDouble) - scales.index_select(1, g_idx) * v;  // [out, in]
  at::Tensor hr = at::matmul(residual, h);  // (H r) per row, H symmetric
  std::vector<at::Tensor> columns(groups);
  for (int64_t g = 0; g < groups; ++g) columns[g] = (g_idx == g).nonzero().squeeze(1);
  for (int it = 0; it < iterations; ++it) {
    for (int64_t g = 0; g < groups; ++g) {
      const at::Tensor& cols = columns[g];
      if (cols.numel() == 0) continue;
      at::Tensor vg = v.index_select(1, cols);                                  // [out, |g|]
      at::Tensor h_gg = h.index_select(0, cols).index_select(1, cols);
      at::Tensor num = (vg * hr.index_select(1, cols)).sum(1);                  // v^T H r
      at::Tensor den = (at::matmul(vg, h_gg) * vg).sum(1);                      // v^T H v
      at::Tensor old_s = scales.select(1, g);
      at::Tensor new_s = at::where(den > 0, old_s + num / den.clamp_min(1e-300), old_s);
      new_s = RoundScalesToFp16(new_s);
      at::Tensor d = new_s - old_s;
      // Exact loss change of the rounded step: -2 d v^T H r + d^2 v^T H v; keep only decreases.
      at::Tensor change = -2 * d * num + d * d * den;
      d = at::where(change < 0, d, at::zeros_like(d));
      scales.select(1, g).add_(d);
      // r -= d v_g on the group's columns; H r -= d (v_g H[g, :]).
      residual.index_add_(1, cols, -(d.unsqueeze(1) * vg));
      hr.sub_(d.unsqueeze(1) * at::matmul(vg, h.index_select(0, cols)));
    }
  }
  q.scales = scales.to(at::kFloat);
  q.weight = DequantizeLinear(q);
  return LayerLoss(target, q.weight, hessian);
}

double RefineGroupScalesPerHead(QuantizedLinear& q, const at::Tensor& target,
                                const std::vector<at::Tensor>& h_in_per_head, int iterations) {
  const int64_t heads = static_cast<int64_t>(h_in_per_head.size());
  const int64_t hd = q.weight.size(0) / heads;
  double loss = 0;
  for (int64_t h = 0; h < heads; ++h) {
    QuantizedLinear part = q;
    part.weight = q.weight.narrow(0, h * hd, hd).clone();
    part.codes = q.codes.narrow(0, h * hd, hd);
    part.scales = q.scales.narrow(0, h * hd, hd).clone();
    part.zeros = q.zeros.narrow(0, h * hd, hd);
    loss += RefineGroupScales(part, target.narrow(0, h * hd, hd), h_in_per_head[h], iterations);
    q.scales.narrow(0, h * hd, hd).copy_(part.scales);
    q.weight.narrow(0, h * hd, hd).copy_(part.weight);
  }
  return loss;
}

double RefineGroupScalesKronecker(QuantizedLinear& q, const at::Tensor& target,
                                  const at::Tensor& h_in, const std::vector<at::Tensor>& h_out,
                                  int iterations) {
  const int64_t heads = static_cast<int64_t>(h_out.size());
  const int64_t hd = q.weight.size(0) / heads;
  at::Tensor hi = h_in.to(at::kDouble);
  const int64_t groups = q.scales.size(1);
  at::Tensor g_idx = q.g_idx.to(at::kLong);
  at::Tensor v = q.codes.to(at::kDouble) - q.zeros.to(at::kDouble).index_select(1, g_idx);
  at::Tensor scales = q.scales.to(at::kDouble).clone();
  std::vector<at::Tensor> columns(groups), h_gg(groups), h_g(groups);
  for (int64_t g = 0; g < groups; ++g) {
    columns[g] = (g_idx == g).nonzero().squeeze(1);
    h_g[g] = hi.index_select(0, columns[g]);                  // [|g|, in]
    h_gg[g] = h_g[g].index_select(1, columns[g]);             // [|g|, |g|]
  }
  at::Tensor t = target.to(at::kDouble);
  for (int64_t h = 0; h < heads; ++h) {  // heads are independent
    at::Tensor ho = h_out[h].to(at::kDouble);
    at::Tensor rows_v = v.narrow(0, h * hd, hd);
    at::Tensor rows_s = scales.narrow(0, h * hd, hd);
    at::Tensor residual = t.narrow(0, h * hd, hd) - rows_s.index_select(1, g_idx) * rows_v;
    at::Tensor grad = at::matmul(at::matmul(ho, residual), hi);  // H_out R H_in, [hd, in]
    for (int it = 0; it < iterations; ++it) {
      for (int64_t r = 0; r < hd; ++r) {
        const double h_rr = ho[r][r].item<double>();
        if (h_rr <= 0) continue;
        for (int64_t g = 0; g < groups; ++g) {
          if (columns[g].numel() == 0) continue;
          at::Tensor vg = rows_v[r].index_select(0, columns[g]);
          const double num = at::dot(vg, grad[r].index_select(0, columns[g])).item<double>();
          const double den = h_rr * at::dot(vg, at::mv(h_gg[g], vg)).item<double>();
          if (!(den > 0)) continue;
          const double old_s = rows_s[r][g].item<double>();
          const double new_s = RoundScaleToFp16(static_cast<float>(old_s + num / den));
          const double d = new_s - old_s;
          if (!(-2 * d * num + d * d * den < 0)) continue;  // exact change of the rounded step
          rows_s[r][g].fill_(new_s);
          grad.sub_(d * at::outer(ho.select(1, r), at::matmul(vg, h_g[g])));
        }
      }
    }
  }
  q.scales = scales.to(at::kFloat);
  q.weight = DequantizeLinear(q);
  at::Tensor d = t - q.weight.to(at::kDouble);
  double loss = 0;
  for (int64_t h = 0; h < heads; ++h) {
    at::Tensor dh = d.narrow(0, h * hd, hd);
    loss += (at::matmul(at::matmul(h_out[h].to(at::kDouble), dh), hi) * dh).sum().item<double>();
  }
  return loss;
}

}  // namespace ptq
