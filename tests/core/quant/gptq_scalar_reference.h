// The GPTQ column loop as it was before the device-generic rewrite (core/quant/gptq_quantizer.cc up
// to commit 6cf8c46): one column at a time, a scalar loop over rows, host pointers, FitGrid per row.
// Kept as the independent reference of the tensor path (tests) and as the "old" side of
// bench/gptq_loop_bench.cc. CPU tensors only; the factor comes from PrepareGptq.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <vector>

#include "core/quant/block_hessian_grid.h"
#include "core/quant/gptq_quantizer.h"
#include "core/quant/quant_grid.h"

namespace ptq {

inline QuantizedLinear ScalarGptqQuantizeWithFactor(const at::Tensor& weight,
                                                    const GptqFactor& factor,
                                                    const GptqOptions& opt,
                                                    const FixedGrids* fixed = nullptr) {
  const int64_t rows = weight.size(0);
  const int64_t cols = weight.size(1);
  const bool grouped = opt.group_size > 0 && opt.group_size < cols;
  const int64_t g = grouped ? opt.group_size : cols;
  // A last group shorter than g is allowed here (GPTQ's reference does the same); whether a job may
  // use one is decided by the option validation, since fast inference kernels reject them.
  const int64_t groups = (cols + g - 1) / g;
  const int maxq = opt.grid.MaxQ();

  at::Tensor w = weight.to(at::kFloat).clone();
  w.masked_fill_(factor.dead.unsqueeze(0), 0.0f);

  const at::Tensor& perm = factor.perm;
  const int64_t* pperm = perm.data_ptr<int64_t>();
  const float* pdiag = factor.diag.defined() ? factor.diag.data_ptr<float>() : nullptr;

  // Grids fixed before the loop, [row * groups + group], and the group of each original column:
  // given ones, or static groups. Static groups are fitted on the (dead-zeroed) original weights,
  // per original column group, with the same stage-1 search as dynamic groups (diag H or the full
  // block as importances when hessian_search is on; factor.diag and factor.h are in quantization
  // order, so put them back in column order first).
  std::vector<GridParams> static_grids;
  std::vector<int64_t> column_group(cols);
  for (int64_t j = 0; j < cols; ++j) column_group[j] = j / g;
  if (fixed != nullptr) {
    at::Tensor gs = fixed->scales.to(at::kFloat).contiguous();
    at::Tensor gz = fixed->zeros.to(at::kFloat).contiguous();
    at::Tensor gi = fixed->g_idx.to(at::kLong).contiguous();
    static_grids.resize(rows * groups);
    for (int64_t k = 0; k < rows * groups; ++k) {
      static_grids[k] = GridParams{gs.data_ptr<float>()[k], gz.data_ptr<float>()[k]};
    }
    for (int64_t j = 0; j < cols; ++j) column_group[j] = gi.data_ptr<int64_t>()[j];
  } else if (opt.static_groups && grouped) {
    at::Tensor wc = w.contiguous();
    std::vector<float> diag_by_column;
    if (pdiag != nullptr) {
      diag_by_column.resize(cols);
      for (int64_t j = 0; j < cols; ++j) diag_by_column[pperm[j]] = pdiag[j];
    }
    static_grids.resize(rows * groups);
    if (factor.h.defined()) {
      at::Tensor by_column = at::argsort(perm);
      at::Tensor h = factor.h.index_select(0, by_column).index_select(1, by_column);
      for (int64_t gi = 0; gi < groups; ++gi) {
        const int64_t len = std::min(g, cols - gi * g);
        GroupGrids grids = FitGroupGridsWithHessianBlock(
            wc.narrow(1, gi * g, len).contiguous(), h.narrow(0, gi * g, len).narrow(1, gi * g, len),
            opt.grid);
        const float* gs = grids.scale.data_ptr<float>();
        const float* gz = grids.zero.data_ptr<float>();
        for (int64_t r = 0; r < rows; ++r) static_grids[r * groups + gi] = GridParams{gs[r], gz[r]};
      }
    } else {
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t gi = 0; gi < groups; ++gi) {
          static_grids[r * groups + gi] =
              FitGrid(wc.data_ptr<float>() + r * cols + gi * g, std::min(g, cols - gi * g),
                      opt.grid, diag_by_column.empty() ? nullptr : diag_by_column.data() + gi * g);
        }
      }
    }
  }

  if (opt.act_order) w = w.index_select(1, perm);
  const at::Tensor& u = factor.u;

  // Blocks hold whole groups, so a group's grid is always fitted on fully compensated weights.
  int64_t block = opt.block_size;
  if (grouped) block = g <= block ? g * (block / g) : g;

  at::Tensor q_perm = at::empty({rows, cols}, at::kFloat);     // dequantized, permuted order
  at::Tensor codes_perm = at::empty({rows, cols}, at::kByte);
  at::Tensor scales = at::empty({rows, groups}, at::kFloat);
  at::Tensor zeros = at::empty({rows, groups}, at::kFloat);
  float* ps = scales.data_ptr<float>();
  float* pz = zeros.data_ptr<float>();

  std::vector<GridParams> row_grid(rows);
  if (!grouped && static_grids.empty()) {  // per-channel: one grid per row, before any compensation
    at::Tensor wc = w.contiguous();
    for (int64_t r = 0; r < rows; ++r) {
      row_grid[r] = FitGrid(wc.data_ptr<float>() + r * cols, cols, opt.grid, pdiag);
      ps[r] = row_grid[r].scale;
      pz[r] = row_grid[r].zero;
    }
  }

  std::vector<float> gather(g);
  for (int64_t b0 = 0; b0 < cols; b0 += block) {
    const int64_t b1 = std::min(b0 + block, cols);
    const int64_t count = b1 - b0;
    // Transposed block: row i holds column b0 + i, so the rank-1 updates run over contiguous memory.
    at::Tensor wt = w.narrow(1, b0, count).t().contiguous();  // [count, rows]
    at::Tensor et = at::empty({count, rows}, at::kFloat);
    at::Tensor qt = at::empty({count, rows}, at::kFloat);
    at::Tensor ct = at::empty({count, rows}, at::kByte);
    float* pw = wt.data_ptr<float>();
    float* pe = et.data_ptr<float>();
    float* pq = qt.data_ptr<float>();
    uint8_t* pc = ct.data_ptr<uint8_t>();
    const float* pu = u.data_ptr<float>();
    for (int64_t i = 0; i < count; ++i) {
      const int64_t c = b0 + i;
      if (grouped && c % g == 0 && static_grids.empty() && factor.h.defined()) {
        // The group's grids from its full Hessian block, all rows at once.
        const int64_t gi = c / g;
        const int64_t len = std::min(g, cols - c);
        GroupGrids grids = FitGroupGridsWithHessianBlock(
            wt.narrow(0, i, len).t().contiguous(), factor.h.narrow(0, c, len).narrow(1, c, len),
            opt.grid);
        const float* gs = grids.scale.data_ptr<float>();
        const float* gz = grids.zero.data_ptr<float>();
        for (int64_t r = 0; r < rows; ++r) {
          row_grid[r] = GridParams{gs[r], gz[r]};
          ps[r * groups + gi] = gs[r];
          pz[r * groups + gi] = gz[r];
        }
      } else if (grouped && c % g == 0) {
        const int64_t gi = c / g;
        for (int64_t r = 0; r < rows; ++r) {
          if (!static_grids.empty()) {
            // With act-order, permuted column c belongs to original group perm[c] / g; without, the
            // same. Grids are looked up per column below, so nothing to fit here.
            continue;
          }
          const int64_t len = std::min(g, cols - c);
          for (int64_t k = 0; k < len; ++k) gather[k] = pw[(i + k) * rows + r];
          row_grid[r] = FitGrid(gather.data(), len, opt.grid, pdiag ? pdiag + c : nullptr);
          ps[r * groups + gi] = row_grid[r].scale;
          pz[r * groups + gi] = row_grid[r].zero;
        }
      }
      if (!static_grids.empty()) {
        const int64_t orig_group = column_group[pperm[c]];
        for (int64_t r = 0; r < rows; ++r) row_grid[r] = static_grids[r * groups + orig_group];
      }
      const float d = pu[c * cols + c];
      float* wi = pw + i * rows;
      float* ei = pe + i * rows;
      for (int64_t r = 0; r < rows; ++r) {
        float code = QuantizeToCode(wi[r], row_grid[r], maxq);
        float deq = DequantizeCode(code, row_grid[r]);
        pc[i * rows + r] = static_cast<uint8_t>(code);
        pq[i * rows + r] = deq;
        ei[r] = (wi[r] - deq) / d;
      }
      for (int64_t j = i + 1; j < count; ++j) {
        const float coef = pu[c * cols + b0 + j];
        float* wj = pw + j * rows;
        for (int64_t r = 0; r < rows; ++r) wj[r] -= ei[r] * coef;
      }
    }
    q_perm.narrow(1, b0, count).copy_(qt.t());
    codes_perm.narrow(1, b0, count).copy_(ct.t());
    if (b1 < cols) {
      // Lazy update of the columns after the block: W[:, b1:] -= E U[b0:b1, b1:].
      at::Tensor rest = w.narrow(1, b1, cols - b1);
      rest.sub_(at::matmul(et.t(), u.narrow(0, b0, count).narrow(1, b1, cols - b1)));
    }
  }

  QuantizedLinear out;
  at::Tensor inv_perm = at::argsort(perm);
  out.weight = q_perm.index_select(1, inv_perm).contiguous();
  out.codes = codes_perm.index_select(1, inv_perm).contiguous();
  out.group_size = g;
  out.bits = opt.grid.bits;
  out.sym = opt.grid.sym;
  at::Tensor g_idx = at::empty({cols}, at::kInt);
  int32_t* pg = g_idx.data_ptr<int32_t>();
  for (int64_t j = 0; j < cols; ++j) {
    pg[pperm[j]] = static_cast<int32_t>(static_grids.empty() ? j / g : column_group[pperm[j]]);
  }
  out.g_idx = g_idx;
  if (!static_grids.empty()) {
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t gi = 0; gi < groups; ++gi) {
        ps[r * groups + gi] = static_grids[r * groups + gi].scale;
        pz[r * groups + gi] = static_grids[r * groups + gi].zero;
      }
    }
  }
  out.scales = scales;
  out.zeros = zeros;
  return out;
}

}  // namespace ptq
