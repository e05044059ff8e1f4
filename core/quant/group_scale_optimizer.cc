#include "core/quant/group_scale_optimizer.h"

#include "core/quant/fp16_scale.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <tuple>

namespace ptq {

at::Tensor LayerLossOnDevice(const at::Tensor& weight, const at::Tensor& quantized,
                             const at::Tensor& hessian) {
  at::Tensor d = (weight.to(at::kDouble) - quantized.to(at::kDouble));
  return (at::matmul(d, hessian.to(d.options())) * d).sum();
}

std::vector<at::Tensor> GroupColumns(const QuantizedLinear& q) {
  at::Tensor g_idx = q.g_idx.to(q.codes.device(), at::kLong);
  const int64_t in = g_idx.numel();
  const int64_t groups = q.scales.size(1);
  const int64_t size = groups == 1 ? in : q.group_size;
  TORCH_CHECK(size > 0 && (in + size - 1) / size == groups, "g_idx: ", groups, " groups of ", size,
              " columns do not cover ", in, " columns");
  auto [group_of, columns] = at::sort(g_idx, /*stable=*/true, /*dim=*/0, /*descending=*/false);
  if (g_idx.is_cpu()) {  // free here; on an accelerator reading it back would synchronise
    TORCH_CHECK(at::equal(group_of, at::arange(in, g_idx.options()).div(size, "floor")),
                "g_idx: every group must have group_size (", size, ") columns, the last the rest");
  }
  std::vector<at::Tensor> out(groups);
  for (int64_t g = 0; g < groups; ++g) out[g] = columns.narrow(0, g * size, std::min(size, in - g * size));
  return out;
}

at::Tensor RefineGroupScales(QuantizedLinear& q, const at::Tensor& target, const at::Tensor& hessian,
                             int iterations) {
  const at::TensorOptions f64 = target.options().dtype(at::kDouble);
  at::Tensor h = hessian.to(f64);
  const int64_t groups = q.scales.size(1);
  at::Tensor g_idx = q.g_idx.to(q.codes.device(), at::kLong);
  // v = codes - zero of each column's group, float64 [out, in].
  at::Tensor v = q.codes.to(at::kDouble) - q.zeros.to(at::kDouble).index_select(1, g_idx);
  at::Tensor scales = q.scales.to(at::kDouble).clone();
  at::Tensor residual = target.to(at::kDouble) - scales.index_select(1, g_idx) * v;  // [out, in]
  at::Tensor hr = at::matmul(residual, h);  // (H r) per row, H symmetric
  const std::vector<at::Tensor> columns = GroupColumns(q);
  for (int it = 0; it < iterations; ++it) {
    for (int64_t g = 0; g < groups; ++g) {  // all rows at once; groups in turn (coordinate descent)
      const at::Tensor& cols = columns[g];
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
  return LayerLossOnDevice(target, q.weight, hessian);
}

at::Tensor RefineGroupScalesPerHead(QuantizedLinear& q, const at::Tensor& target,
                                    const std::vector<at::Tensor>& h_in_per_head, int iterations) {
  const int64_t heads = static_cast<int64_t>(h_in_per_head.size());
  const int64_t hd = q.weight.size(0) / heads;
  // Heads apart: one batched matmul over heads would change the BLAS calls, and with them the bits.
  at::Tensor loss = at::zeros({}, target.options().dtype(at::kDouble));
  for (int64_t h = 0; h < heads; ++h) {
    QuantizedLinear part = q;
    part.weight = q.weight.narrow(0, h * hd, hd).clone();
    part.codes = q.codes.narrow(0, h * hd, hd);
    part.scales = q.scales.narrow(0, h * hd, hd).clone();
    part.zeros = q.zeros.narrow(0, h * hd, hd);
    loss = loss + RefineGroupScales(part, target.narrow(0, h * hd, hd), h_in_per_head[h], iterations);
    q.scales.narrow(0, h * hd, hd).copy_(part.scales);
    q.weight.narrow(0, h * hd, hd).copy_(part.weight);
  }
  return loss;
}

at::Tensor RefineGroupScalesKronecker(QuantizedLinear& q, const at::Tensor& target,
                                      const at::Tensor& h_in, const std::vector<at::Tensor>& h_out,
                                      int iterations) {
  const int64_t heads = static_cast<int64_t>(h_out.size());
  const int64_t hd = q.weight.size(0) / heads;
  const at::TensorOptions f64 = target.options().dtype(at::kDouble);
  at::Tensor hi = h_in.to(f64);
  const int64_t groups = q.scales.size(1);
  at::Tensor g_idx = q.g_idx.to(q.codes.device(), at::kLong);
  at::Tensor v = q.codes.to(at::kDouble) - q.zeros.to(at::kDouble).index_select(1, g_idx);
  at::Tensor scales = q.scales.to(at::kDouble).clone();
  const std::vector<at::Tensor> columns = GroupColumns(q);
  std::vector<at::Tensor> h_gg(groups), h_g(groups);
  for (int64_t g = 0; g < groups; ++g) {
    h_g[g] = hi.index_select(0, columns[g]);                  // [|g|, in]
    h_gg[g] = h_g[g].index_select(1, columns[g]);             // [|g|, |g|]
  }
  at::Tensor t = target.to(at::kDouble);
  const at::Tensor zero = at::zeros({}, f64);
  // Each step's rank-one update is written here: a fresh [head_dim, in] tensor per step would cost
  // an allocation (on the CPU with its page faults) every time.
  const at::Tensor update = at::empty({hd, q.weight.size(1)}, f64);
  // Heads are independent, but each stays its own sequence of small BLAS calls: batching heads (or
  // rows) into one call would change the reductions and with them the bits of the result.
  for (int64_t h = 0; h < heads; ++h) {
    at::Tensor ho = h_out[h].to(f64);
    at::Tensor rows_v = v.narrow(0, h * hd, hd);
    at::Tensor rows_s = scales.narrow(0, h * hd, hd);
    at::Tensor residual = t.narrow(0, h * hd, hd) - rows_s.index_select(1, g_idx) * rows_v;
    at::Tensor grad = at::matmul(at::matmul(ho, residual), hi);  // H_out R H_in, [hd, in]
    // What does not change with the scales, once per head instead of once per sweep: each group's
    // v, the denominators H_out_rr v^T H_in_gg v, and where a step is possible at all.
    std::vector<at::Tensor> v_cols(groups);
    for (int64_t g = 0; g < groups; ++g) v_cols[g] = rows_v.index_select(1, columns[g]);  // [hd, |g|]
    std::vector<at::Tensor> vhv;
    vhv.reserve(hd * groups);
    for (int64_t r = 0; r < hd; ++r) {
      for (int64_t g = 0; g < groups; ++g) {
        const at::Tensor vg = v_cols[g].select(0, r);
        vhv.push_back(at::dot(vg, at::mv(h_gg[g], vg)));
      }
    }
    const at::Tensor h_rr = ho.diagonal();
    const at::Tensor den = h_rr.unsqueeze(1) * at::stack(vhv).reshape({hd, groups});
    const at::Tensor can_step = (h_rr > 0).unsqueeze(1) & (den > 0);  // [hd, groups]
    for (int it = 0; it < iterations; ++it) {
      const bool last_sweep = it + 1 == iterations;
      for (int64_t r = 0; r < hd; ++r) {
        const at::Tensor grad_r = grad.select(0, r);  // a view: sees the updates below
        // In the last sweep the rows already done never read grad again: update only rows r.. .
        const int64_t first_row = last_sweep ? r : 0;
        at::Tensor grad_rows = grad.narrow(0, first_row, hd - first_row);
        const at::Tensor ho_r = ho.select(1, r).narrow(0, first_row, hd - first_row);
        const at::Tensor den_r = den.select(0, r), can_step_r = can_step.select(0, r);
        const at::Tensor s_r = rows_s.select(0, r);
        for (int64_t g = 0; g < groups; ++g) {
          const at::Tensor vg = v_cols[g].select(0, r);
          const at::Tensor den_rg = den_r.select(0, g);
          at::Tensor old_s = s_r.select(0, g);  // a view, written last
          const at::Tensor num = at::dot(vg, grad_r.index_select(0, columns[g]));
          const at::Tensor new_s = RoundScalesToFp16(old_s + num / den_rg);
          const at::Tensor d = new_s - old_s;
          // The rounded step's exact change -2 d num + d^2 den is negative iff d^2 den < 2 d num
          // (the same roundings; x - y < 0 iff x < y). A rejected step becomes a step of 0.
          const at::Tensor take = can_step_r.select(0, g) & (d * d * den_rg < 2 * d * num);
          old_s.copy_(at::where(take, new_s, old_s));
          // Applied every step (a rejected one adds zeros): whether to skip is known on the device only.
          at::Tensor u = update.narrow(0, 0, hd - first_row);
          at::outer_out(u, ho_r, at::matmul(vg, h_g[g]));
          grad_rows.sub_(u.mul_(at::where(take, d, zero)));
        }
      }
    }
  }
  q.scales = scales.to(at::kFloat);
  q.weight = DequantizeLinear(q);
  at::Tensor d = t - q.weight.to(at::kDouble);
  at::Tensor loss = zero;
  for (int64_t h = 0; h < heads; ++h) {
    at::Tensor dh = d.narrow(0, h * hd, hd);
    loss = loss + (at::matmul(at::matmul(h_out[h].to(f64), dh), hi) * dh).sum();
  }
  return loss;
}

}  // namespace ptq
