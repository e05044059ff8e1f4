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
  const int64_t in = h.size(0);
  at::Tensor g_idx = q.g_idx.to(q.codes.device(), at::kLong);
  // v = codes - zero of each column's group, float64 [out, in].
  at::Tensor v = q.codes.to(at::kDouble) - q.zeros.to(at::kDouble).index_select(1, g_idx);
  at::Tensor scales = q.scales.to(at::kDouble).clone();
  // (H r) per row (H symmetric) for the residual r = target - s v; the steps keep it current.
  at::Tensor hr =
      at::matmul(target.to(at::kDouble) - scales.index_select(1, g_idx) * v, h);  // [out, in]
  const std::vector<at::Tensor> columns = GroupColumns(q);
  // Groups in column order (no act-order; known on the CPU without a device read) are read through
  // views instead of gathered copies, and group g is columns [g * size, g * size + |g|).
  const int64_t size = columns[0].numel();
  const bool in_order =
      g_idx.is_cpu() && at::equal(g_idx, at::arange(in, g_idx.options()).div(size, "floor"));
  auto group_cols = [&](const at::Tensor& t, int64_t dim, int64_t g) {
    return in_order ? t.narrow(dim, g * size, columns[g].numel()) : t.index_select(dim, columns[g]);
  };
  // What the sweeps do not change: each group's v and the denominators v^T H_gg v.
  std::vector<at::Tensor> v_g(groups), den(groups);
  for (int64_t g = 0; g < groups; ++g) {
    v_g[g] = group_cols(v, 1, g);                                              // [out, |g|]
    den[g] = (at::matmul(v_g[g], group_cols(group_cols(h, 0, g), 1, g)) * v_g[g]).sum(1);
  }
  for (int it = 0; it < iterations; ++it) {
    const bool last_sweep = it + 1 == iterations;
    for (int64_t g = 0; g < groups; ++g) {  // all rows at once; groups in turn (coordinate descent)
      const at::Tensor& vg = v_g[g];
      at::Tensor num = (vg * group_cols(hr, 1, g)).sum(1);                     // v^T H r
      at::Tensor old_s = scales.select(1, g);
      at::Tensor new_s =
          at::where(den[g] > 0, old_s + num / den[g].clamp_min(1e-300), old_s);
      new_s = RoundScalesToFp16(new_s);
      at::Tensor d = new_s - old_s;
      // Exact loss change of the rounded step: -2 d v^T H r + d^2 v^T H v; keep only decreases.
      at::Tensor change = -2 * d * num + d * d * den[g];
      d = at::where(change < 0, d, at::zeros_like(d));
      scales.select(1, g).add_(d);
      // H r -= d (v_g H[g, :]). In the last sweep only later groups read H r again: with groups of
      // consecutive columns, update only the columns after this group.
      const at::Tensor h_rows = group_cols(h, 0, g);                           // [|g|, in]
      if (last_sweep && in_order) {
        const int64_t rest = g * size + columns[g].numel();
        if (rest < in) {
          hr.narrow(1, rest, in - rest)
              .sub_(d.unsqueeze(1) * at::matmul(vg, h_rows.narrow(1, rest, in - rest)));
        }
      } else {
        hr.sub_(d.unsqueeze(1) * at::matmul(vg, h_rows));
      }
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
  const int64_t in = q.weight.size(1);
  const at::TensorOptions f64 = target.options().dtype(at::kDouble);
  at::Tensor hi = h_in.to(f64);
  const int64_t groups = q.scales.size(1);
  at::Tensor g_idx = q.g_idx.to(q.codes.device(), at::kLong);
  const std::vector<at::Tensor> columns = GroupColumns(q);
  std::vector<at::Tensor> h_gg(groups), h_g(groups);
  for (int64_t g = 0; g < groups; ++g) {
    h_g[g] = hi.index_select(0, columns[g]);                  // [|g|, in]
    h_gg[g] = h_g[g].index_select(1, columns[g]);             // [|g|, |g|]
  }
  // Heads side by side ([heads, head_dim, ...]): they are independent, so each step of the
  // coordinate descent, one (row, group), runs for every head at once, and the number of small
  // operations no longer grows with the head count.
  std::vector<at::Tensor> ho_list;
  for (const at::Tensor& h : h_out) ho_list.push_back(h.to(f64));
  const at::Tensor ho = at::stack(ho_list);                                  // [heads, hd, hd]
  const at::Tensor v = (q.codes.to(at::kDouble) -
                        q.zeros.to(at::kDouble).index_select(1, g_idx)).view({heads, hd, in});
  at::Tensor scales = q.scales.to(at::kDouble).clone();
  const at::Tensor s3 = scales.view({heads, hd, groups});  // a view: steps write into scales
  const at::Tensor t = target.to(at::kDouble).view({heads, hd, in});
  const at::Tensor residual = t - s3.index_select(2, g_idx) * v;
  at::Tensor grad = at::matmul(at::matmul(ho, residual), hi);  // H_out R H_in per head
  // What does not change with the scales: each group's v, the denominators
  // H_out_rr v^T H_in_gg v, and where a step is possible at all.
  std::vector<at::Tensor> v_cols(groups), vhv(groups);
  for (int64_t g = 0; g < groups; ++g) {
    v_cols[g] = v.index_select(2, columns[g]);                               // [heads, hd, |g|]
    vhv[g] = (at::matmul(v_cols[g], h_gg[g]) * v_cols[g]).sum(2);            // [heads, hd]
  }
  const at::Tensor h_rr = ho.diagonal(0, 1, 2);                              // [heads, hd]
  const at::Tensor den = h_rr.unsqueeze(2) * at::stack(vhv, 2);              // [heads, hd, groups]
  const at::Tensor can_step = (h_rr > 0).unsqueeze(2) & (den > 0);
  const at::Tensor zero = at::zeros({}, f64);
  // Each step's update is written here: a fresh [heads, head_dim, in] tensor per step would cost an
  // allocation (on the CPU with its page faults) every time.
  const at::Tensor update = at::empty({heads, hd, in}, f64);
  for (int it = 0; it < iterations; ++it) {
    const bool last_sweep = it + 1 == iterations;
    for (int64_t r = 0; r < hd; ++r) {
      const at::Tensor grad_r = grad.select(1, r);  // [heads, in], a view: sees the updates below
      // In the last sweep the rows already done never read grad again: update only rows r.. .
      const int64_t first_row = last_sweep ? r : 0;
      const int64_t rows = hd - first_row;
      at::Tensor grad_rows = grad.narrow(1, first_row, rows);
      const at::Tensor ho_r = ho.select(2, r).narrow(1, first_row, rows).unsqueeze(2);
      const at::Tensor den_r = den.select(1, r), can_step_r = can_step.select(1, r);
      const at::Tensor s_r = s3.select(1, r);  // [heads, groups]
      for (int64_t g = 0; g < groups; ++g) {
        const at::Tensor vg = v_cols[g].select(1, r);  // [heads, |g|]
        const at::Tensor den_rg = den_r.select(1, g);
        at::Tensor old_s = s_r.select(1, g);  // a view, written last
        const at::Tensor num = (vg * grad_r.index_select(1, columns[g])).sum(1);
        const at::Tensor new_s = RoundScalesToFp16(old_s + num / den_rg);
        const at::Tensor d = new_s - old_s;
        // The rounded step's exact change -2 d num + d^2 den is negative iff d^2 den < 2 d num
        // (the same roundings; x - y < 0 iff x < y). A rejected step becomes a step of 0.
        const at::Tensor take = can_step_r.select(1, g) & (d * d * den_rg < 2 * d * num);
        old_s.copy_(at::where(take, new_s, old_s));
        // Applied every step (a rejected one adds zeros): whether to skip is known on the device
        // only. The update is H_out[:, r] (v_g^T H_in[g, :]) per head.
        at::Tensor u = update.narrow(1, 0, rows);
        at::mul_out(u, ho_r, at::matmul(vg, h_g[g]).unsqueeze(1));
        grad_rows.sub_(u.mul_(at::where(take, d, zero).view({heads, 1, 1})));
      }
    }
  }
  q.scales = scales.to(at::kFloat);
  q.weight = DequantizeLinear(q);
  const at::Tensor d = t - q.weight.to(at::kDouble).view({heads, hd, in});
  return (at::matmul(at::matmul(ho, d), hi) * d).sum();
}

}  // namespace ptq
