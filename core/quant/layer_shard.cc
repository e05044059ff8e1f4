#include "core/quant/layer_shard.h"

#include <ATen/ATen.h>

#include <optional>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "core/quant/boa_quantizer.h"
#include "core/quant/group_scale_optimizer.h"
#include "core/quant/rtn_quantizer.h"

namespace ptq {

std::vector<RowUnit> SplitRows(int64_t out_rows, int64_t head_dim) {
  std::vector<RowUnit> units;
  const int64_t step = head_dim > 0 ? head_dim : kRowUnit;
  for (int64_t r = 0; r < out_rows; r += step) units.push_back({r, std::min(step, out_rows - r)});
  return units;
}

std::pair<size_t, size_t> UnitsOfRank(size_t units, int rank, int size) {
  // Rounded up, so that rank 0 always owns the first unit when there is one.
  auto start = [&](int r) { return (units * r + size - 1) / size; };
  return {start(rank), start(rank + 1)};
}

namespace {

// Losses stay 0-dim float64 tensors on the layer's device until QuantizeUnits reads the report's
// numbers back once, at its end; sums run in the order the host sums ran, so the bits are the same.
at::Tensor SumHeads(const at::Tensor& target, const at::Tensor& q, const std::vector<at::Tensor>& h,
                    int64_t hd) {
  at::Tensor loss = at::zeros({}, target.options().dtype(at::kDouble));
  for (size_t i = 0; i < h.size(); ++i) {
    const int64_t r0 = static_cast<int64_t>(i) * hd;
    loss = loss + LayerLossOnDevice(target.narrow(0, r0, hd), q.narrow(0, r0, hd), h[i]);
  }
  return loss;
}

// One pass of the layer's method over this rank's rows, scales refined: the rows and, per unit,
// the objective the method minimises (Kronecker loss of a q/k head, value-block loss of a v head,
// the H-weighted loss of a row chunk). grids: nullptr, or the grids of these rows to reuse.
struct Pass {
  QuantizedLinear q;
  std::vector<at::Tensor> objective;  // 0-dim, on the device
};

absl::StatusOr<Pass> QuantizePass(const LayerProblem& p, const LayerSettings& s,
                                  const at::Tensor& target, const std::vector<RowUnit>& units,
                                  size_t first, size_t last, const GptqFactor* factor,
                                  const FixedGrids* grids) {
  const int64_t r0 = units[first].row0;
  const int64_t hd = p.head_dim;
  const size_t h0 = static_cast<size_t>(r0 / std::max<int64_t>(hd, 1));
  const size_t nh = last - first;
  auto unit_rows = [&](const at::Tensor& t, size_t u) {
    return t.narrow(0, units[u].row0 - r0, units[u].rows);
  };
  Pass pass;
  if (!p.h_out.empty()) {  // BoA/TurboBoA q/k: heads are independent given their H_out
    std::vector<at::Tensor> h_out(p.h_out.begin() + h0, p.h_out.begin() + h0 + nh);
    BoaOptions bo;
    bo.gptq = s.gptq;
    bo.joint_rows = s.joint_rows;
    bo.act_order_rows = s.act_order_rows;
    PTQ_ASSIGN_OR_RETURN(pass.q,
                         BoaQuantize(target, p.hessian, h_out, bo, p.name, grids, p.factor.get()));
    if (s.refine_iters > 0) {
      RefineGroupScalesKronecker(pass.q, target, p.hessian, h_out, s.refine_iters);
    }
    for (size_t u = first; u < last; ++u) {
      pass.objective.push_back(KroneckerLossOnDevice(unit_rows(target, u),
                                                     unit_rows(pass.q.weight, u), p.hessian,
                                                     {h_out[u - first]}));
    }
  } else if (!p.h_value.empty()) {
    std::vector<at::Tensor> h_v(p.h_value.begin() + h0, p.h_value.begin() + h0 + nh);
    GptqOptions value_options = s.gptq;
    value_options.damp = s.value_damp;
    PTQ_ASSIGN_OR_RETURN(pass.q, BoaValueQuantize(target, h_v, value_options, p.name, grids));
    if (s.refine_iters > 0) RefineGroupScalesPerHead(pass.q, target, h_v, s.refine_iters);
    for (size_t u = first; u < last; ++u) {
      pass.objective.push_back(
          LayerLossOnDevice(unit_rows(target, u), unit_rows(pass.q.weight, u), h_v[u - first]));
    }
  } else {  // GPTQ: one factor, rows unit by unit
    std::vector<QuantizedLinear> parts;
    for (size_t u = first; u < last; ++u) {
      at::Tensor t = unit_rows(target, u);
      FixedGrids unit_grids;
      if (grids != nullptr) unit_grids = grids->Rows(units[u].row0 - r0, units[u].rows);
      PTQ_ASSIGN_OR_RETURN(QuantizedLinear q,
                           GptqQuantizeWithFactor(t, *factor, s.gptq, p.name,
                                                  grids != nullptr ? &unit_grids : nullptr));
      pass.objective.push_back(s.refine_iters > 0
                                   ? RefineGroupScales(q, t, p.hessian, s.refine_iters)
                                   : LayerLossOnDevice(t, q.weight, p.hessian));
      parts.push_back(std::move(q));
    }
    pass.q = ConcatRows(parts);
  }
  return pass;
}

// Quantizes this rank's units [first, last) of the layer.
absl::StatusOr<QuantizedLayer> QuantizeUnits(const LayerProblem& p, const LayerSettings& s,
                                             const std::vector<RowUnit>& units, size_t first,
                                             size_t last) {
  const int64_t r0 = units[first].row0;
  // Target rows, unit by unit: W + W R.
  std::vector<at::Tensor> target_parts;
  for (size_t u = first; u < last; ++u) {
    at::Tensor w = p.weight.narrow(0, units[u].row0, units[u].rows);
    if (p.residual.defined()) {
      at::Tensor wd = w.to(at::kDouble);
      w = (wd + at::matmul(wd, p.residual.to(wd.options()))).to(p.weight.scalar_type());
    }
    target_parts.push_back(w);
  }
  at::Tensor target = at::cat(target_parts, 0);
  QuantizedLayer out;
  const bool kronecker = !p.h_out.empty();
  const bool value_heads = !p.h_value.empty();
  const int64_t hd = p.head_dim;
  const size_t h0 = static_cast<size_t>(r0 / std::max<int64_t>(hd, 1));
  const size_t nh = last - first;
  const at::Tensor zero = at::zeros({}, target.options().dtype(at::kDouble));
  at::Tensor loss = zero, base = zero, rtn_loss = zero;
  if (s.rtn) {
    out.q = RtnQuantize(target, s.gptq.grid, s.gptq.group_size);
  } else {
    std::optional<GptqFactor> factor;
    if (!kronecker && !value_heads && p.factor == nullptr) {
      PTQ_ASSIGN_OR_RETURN(factor, PrepareGptq(p.hessian, s.gptq, p.name));
    }
    const GptqFactor* f = factor ? &*factor : p.factor.get();
    PTQ_ASSIGN_OR_RETURN(Pass best, QuantizePass(p, s, target, units, first, last, f, nullptr));
    // --requant-passes: quantize again on the refined grids of the best pass so far, so the integers
    // adapt to the scales stage 2 chose; each unit keeps the pass with its lowest objective, so its
    // loss never rises. Decided unit by unit, so any number of workers gives the same rows; decided
    // on the device (a pass that is not better is selected away), so nothing is read back.
    for (int k = 0; k < s.requant_passes; ++k) {
      const FixedGrids grids{best.q.scales, best.q.zeros, best.q.g_idx};
      PTQ_ASSIGN_OR_RETURN(Pass next, QuantizePass(p, s, target, units, first, last, f, &grids));
      for (size_t u = first; u < last; ++u) {
        const size_t i = u - first;
        const at::Tensor better = next.objective[i] < best.objective[i];
        best.objective[i] = at::where(better, next.objective[i], best.objective[i]);
        const int64_t row = units[u].row0 - r0;
        for (at::Tensor QuantizedLinear::*field :
             {&QuantizedLinear::weight, &QuantizedLinear::codes, &QuantizedLinear::scales,
              &QuantizedLinear::zeros}) {
          at::Tensor kept = (best.q.*field).narrow(0, row, units[u].rows);
          kept.copy_(at::where(better, (next.q.*field).narrow(0, row, units[u].rows), kept));
        }
      }
    }
    out.q = std::move(best.q);
    if (kronecker) {
      loss = LayerLossOnDevice(target, out.q.weight, p.hessian);  // the report compares with GPTQ's H_in
    } else {
      for (const at::Tensor& v : best.objective) loss = loss + v;
    }
  }
  if (p.hessian.defined()) {
    // Plain round-to-nearest on min-max grids (the classic RTN baseline) at the method's width and
    // group size: one pass, so the report costs little beside the method (a searched grid cost as
    // much as stage 1 of the method's own scales).
    GridOptions plain = s.gptq.grid;
    plain.mse = plain.hessian_search = plain.hessian_block = false;
    const QuantizedLinear rtn = RtnQuantize(target, plain, s.gptq.group_size);
    if (value_heads) {
      std::vector<at::Tensor> h_v(p.h_value.begin() + h0, p.h_value.begin() + h0 + nh);
      base = SumHeads(target, at::zeros_like(target), h_v, hd);
      rtn_loss = SumHeads(target, rtn.weight.to(target.device()), h_v, hd);
    } else {
      base = LayerLossOnDevice(target, at::zeros_like(target), p.hessian);
      rtn_loss = LayerLossOnDevice(target, rtn.weight.to(target.device()), p.hessian);
    }
  }
  // The report's numbers: the layer's one read-back.
  const at::Tensor numbers = at::stack({loss, base, rtn_loss}).to(at::kCPU);
  out.loss = numbers[0].item<double>();
  out.base = numbers[1].item<double>();
  out.rtn_loss = numbers[2].item<double>();
  out.q.loss = out.loss;
  return out;
}

}  // namespace

absl::StatusOr<QuantizedLayer> QuantizeLayer(const LayerProblem& p, const LayerSettings& s,
                                             Collective& group) {
  const int64_t out_rows = p.weight.size(0), in = p.weight.size(1);
  const bool by_head = !p.h_out.empty() || !p.h_value.empty();
  const std::vector<RowUnit> units = SplitRows(out_rows, by_head ? p.head_dim : 0);
  std::vector<int64_t> rows_per_rank;
  for (int r = 0; r < group.size(); ++r) {
    auto [a, b] = UnitsOfRank(units.size(), r, group.size());
    rows_per_rank.push_back(a == b ? 0 : units[b - 1].row0 + units[b - 1].rows - units[a].row0);
  }
  auto [first, last] = UnitsOfRank(units.size(), group.size() > 0 ? group.rank() : 0, group.size());
  QuantizedLayer mine;
  if (first < last) {
    PTQ_ASSIGN_OR_RETURN(mine, QuantizeUnits(p, s, units, first, last));
  } else {  // more ranks than units: contribute nothing, but with the right shapes
    const int64_t g = s.gptq.group_size;
    const int64_t groups = (g > 0 && g < in) ? (in + g - 1) / g : 1;
    mine.q.weight = at::empty({0, in}, p.weight.options());
    mine.q.codes = at::empty({0, in}, p.weight.options().dtype(at::kByte));
    mine.q.scales = at::empty({0, groups}, p.weight.options().dtype(at::kFloat));
    mine.q.zeros = at::empty({0, groups}, p.weight.options().dtype(at::kFloat));
    mine.q.bits = s.gptq.grid.bits;
    mine.q.sym = s.gptq.grid.sym;
  }
  if (group.size() == 1) return mine;
  QuantizedLayer all = mine;
  PTQ_ASSIGN_OR_RETURN(all.q.weight, group.AllGatherRows(mine.q.weight.contiguous(), rows_per_rank));
  PTQ_ASSIGN_OR_RETURN(all.q.codes, group.AllGatherRows(mine.q.codes.contiguous(), rows_per_rank));
  PTQ_ASSIGN_OR_RETURN(all.q.scales, group.AllGatherRows(mine.q.scales.contiguous(), rows_per_rank));
  PTQ_ASSIGN_OR_RETURN(all.q.zeros, group.AllGatherRows(mine.q.zeros.contiguous(), rows_per_rank));
  // g_idx and group size are the same on every rank that quantized: take rank 0's (it always has
  // the first unit).
  std::vector<int64_t> only_first(group.size(), 0);
  only_first[0] = in;
  at::Tensor g_idx = group.rank() == 0 ? mine.q.g_idx.to(at::kInt).contiguous()
                                       : at::empty({0}, p.weight.options().dtype(at::kInt));
  PTQ_ASSIGN_OR_RETURN(all.q.g_idx, group.AllGatherRows(g_idx, only_first));
  // Losses (the report, not the checkpoint), summed in rank order. They are host numbers already
  // (QuantizeUnits read them back); they travel on the layer's device, as the rows do, and come back
  // to the host once.
  at::Tensor losses =
      at::tensor({mine.loss, mine.base, mine.rtn_loss, static_cast<double>(mine.q.group_size)},
                 at::kDouble)
          .reshape({1, 4})
          .to(p.weight.device());
  PTQ_ASSIGN_OR_RETURN(at::Tensor gathered,
                       group.AllGatherRows(losses, std::vector<int64_t>(group.size(), 1)));
  const at::Tensor every = gathered.to(at::kCPU).contiguous();
  const auto e = every.accessor<double, 2>();
  all.loss = all.base = all.rtn_loss = 0;
  for (int r = 0; r < group.size(); ++r) {
    all.loss += e[r][0];
    all.base += e[r][1];
    all.rtn_loss += e[r][2];
  }
  all.q.group_size = static_cast<int64_t>(e[0][3]);
  all.q.loss = all.loss;
  return all;
}

}  // namespace ptq
