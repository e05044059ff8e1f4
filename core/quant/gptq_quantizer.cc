#include "core/quant/gptq_quantizer.h"

#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/quant/block_hessian_grid.h"
#include "core/quant/grid_search.h"

namespace ptq {

absl::StatusOr<at::Tensor> InverseCholeskyUpper(const at::Tensor& hessian, double damp,
                                                const std::string& what) {
  at::Tensor h = hessian.to(at::kDouble);
  const int64_t n = h.size(0);
  if (!at::isfinite(h).all().item<bool>()) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": the Hessian has non-finite entries (NaN or infinite activations in calibration)"));
  }
  const double mean_diag = h.diagonal().mean().item<double>();
  double lambda = damp;
  for (int attempt = 0; attempt < 8; ++attempt) {
    at::Tensor damped = h + at::eye(n, h.options()) * (lambda * mean_diag);
    try {
      at::Tensor l = at::linalg_cholesky(damped, /*upper=*/false);
      at::Tensor inv = at::cholesky_inverse(l, /*upper=*/false);
      at::Tensor u = at::linalg_cholesky(inv, /*upper=*/true);
      if (at::isfinite(u).all().item<bool>()) return u;
      spdlog::warn("{}: non-finite inverse Cholesky factor with damping {:g}", what, lambda);
    } catch (const c10::Error&) {
      spdlog::warn("{}: Cholesky failed with damping {:g}", what, lambda);
    }
    lambda = lambda == 0 ? 1e-4 : lambda * 2;
    spdlog::warn("{}: retrying with damping {:g}", what, lambda);
  }
  return absl::InternalError(absl::StrFormat(
      "%s: the Hessian is not positive definite even with damping %g (non-finite inputs?)", what,
      lambda));
}

absl::StatusOr<GptqFactor> PrepareGptq(const at::Tensor& hessian, const GptqOptions& opt,
                                       const std::string& what, bool keep_f64_factor) {
  if (hessian.dim() != 2 || hessian.size(0) != hessian.size(1)) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": the Hessian is not square"));
  }
  at::Tensor h = hessian.to(at::kDouble).clone();
  GptqFactor f;
  // Dead inputs never reach the layer: any value there is free, so zero it and make H invertible.
  f.dead = h.diagonal() == 0;
  h.diagonal().masked_fill_(f.dead, 1.0);
  if (opt.act_order) {
    f.perm = std::get<1>(at::sort(h.diagonal(), /*stable=*/true, /*dim=*/0, /*descending=*/true));
    h = h.index_select(0, f.perm).index_select(1, f.perm);
  } else {
    f.perm = at::arange(h.size(0), h.options().dtype(at::kLong));
  }
  const double damping = opt.damp * h.diagonal().mean().item<double>();
  f.diag = (h.diagonal() + damping).to(at::kFloat).contiguous();
  if (opt.grid.hessian_search && opt.grid.hessian_block) {
    f.h = (h + at::eye(h.size(0), h.options()) * damping).to(at::kFloat).contiguous();
  }
  auto u = InverseCholeskyUpper(h, opt.damp, what);
  if (!u.ok()) return u.status();
  f.u = u->to(at::kFloat).contiguous();
  if (keep_f64_factor && !opt.act_order) f.u_f64 = *u;
  return f;
}

FixedGrids FixedGrids::Rows(int64_t row0, int64_t rows) const {
  return FixedGrids{scales.narrow(0, row0, rows), zeros.narrow(0, row0, rows), g_idx};
}

absl::StatusOr<QuantizedLinear> GptqQuantize(const at::Tensor& weight, const at::Tensor& hessian,
                                             const GptqOptions& opt, const std::string& what,
                                             const FixedGrids* grids) {
  if (hessian.dim() != 2 || hessian.size(0) != weight.size(1) || hessian.size(1) != weight.size(1)) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": Hessian shape does not match weight"));
  }
  auto factor = PrepareGptq(hessian, opt, what);
  if (!factor.ok()) return factor.status();
  auto out = GptqQuantizeWithFactor(weight, *factor, opt, what, grids);
  if (out.ok()) out->loss = LayerLoss(weight, out->weight, hessian);
  return out;
}

namespace {

// t[:, index]. (index_select has no meta kernel in libtorch 1.13; advanced indexing has, and the
// no-host-read test runs this file on the meta device.)
at::Tensor SelectColumns(const at::Tensor& t, const at::Tensor& index) {
  return t.index({at::indexing::Slice(), index}).contiguous();
}

// inverse[perm[j]] = j.
at::Tensor InversePermutation(const at::Tensor& perm) {
  return at::empty_like(perm).index_copy_(0, perm, at::arange(perm.numel(), perm.options()));
}

// A column's grid for all rows as the loop uses it: code - zero is clamped to [low, high] =
// [-zero, maxq - zero], which equals clamp(round(w/s) + zero, 0, maxq) - zero exactly (small
// integers in float), so the code need not be formed inside the loop.
struct ColumnGrid {
  at::Tensor scale, low, high;  // [rows] or [1, rows] float32
};
ColumnGrid ToColumnGrid(const at::Tensor& scale, const at::Tensor& zero, float maxq) {
  return ColumnGrid{scale, -zero, maxq - zero};
}

// A view of a 2-D buffer that is moved in place (TensorImpl metadata; no dispatch, no allocation).
// The column loop needs about ten views per column, and making each with narrow or as_strided
// costs about as much as the small op it feeds, on the CPU. Ops launched before a move keep the
// view they were given (TensorIterator reads the metadata at the call), on CUDA too.
class MovingView {
 public:
  explicit MovingView(const at::Tensor& base) : base_(base), view_(base.alias()) {}
  // base.as_strided({rows, cols}, {row_stride, col_stride}, base.storage_offset() + offset)
  at::Tensor& Set(int64_t rows, int64_t cols, int64_t row_stride, int64_t col_stride,
                  int64_t offset) {
    const int64_t sizes[2] = {rows, cols}, strides[2] = {row_stride, col_stride};
    c10::TensorImpl* impl = view_.unsafeGetTensorImpl();
    impl->set_sizes_and_strides(c10::IntArrayRef(sizes), c10::IntArrayRef(strides));
    impl->set_storage_offset(base_.storage_offset() + offset);
    return view_;
  }
  // Rows [first, first + n) of the buffer.
  at::Tensor& Rows(int64_t first, int64_t n) {
    return Set(n, base_.size(1), base_.stride(0), base_.stride(1), first * base_.stride(0));
  }

 private:
  at::Tensor base_, view_;
};

// The buffers of one lazy block, transposed (row i holds the block's column i, so a column's ops
// run over contiguous memory), allocated once per call.
struct BlockBuffers {
  at::Tensor w;          // [block, rows]: the block's weights, compensated as the loop goes
  at::Tensor t, q, e;    // [block, rows]: code - zero, dequantized value, (w - q) / U_cc
  at::Tensor u;          // [block, block]: the block's diagonal block of U
  at::Tensor product;    // [block, rows]: scratch of the rank-1 updates
  at::Tensor s;          // [block, rows]: each column's scale (fixed grids only)
  at::Tensor low, high;  // [block, rows]: -zero, maxq - zero

  BlockBuffers(int64_t block, int64_t rows, bool fixed_grids, const at::TensorOptions& o)
      : w(at::empty({block, rows}, o)), t(at::empty({block, rows}, o)),
        q(at::empty({block, rows}, o)), e(at::empty({block, rows}, o)),
        u(at::empty({block, block}, o)), product(at::empty({block, rows}, o)) {
    if (fixed_grids) {
      s = at::empty({block, rows}, o);
      low = at::empty({block, rows}, o);
      high = at::empty({block, rows}, o);
    }
  }
};

}  // namespace

absl::StatusOr<QuantizedLinear> GptqQuantizeWithFactor(const at::Tensor& weight,
                                                       const GptqFactor& factor,
                                                       const GptqOptions& opt,
                                                       const std::string& what,
                                                       const FixedGrids* fixed) {
  const int64_t rows = weight.size(0);
  const int64_t cols = weight.size(1);
  if (factor.u.size(0) != cols) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": Hessian shape does not match weight"));
  }
  const bool grouped = opt.group_size > 0 && opt.group_size < cols;
  const int64_t g = grouped ? opt.group_size : cols;
  // A last group shorter than g is allowed here (GPTQ's reference does the same); whether a job may
  // use one is decided by the option validation, since fast inference kernels reject them.
  const int64_t groups = (cols + g - 1) / g;
  const float maxq = static_cast<float>(opt.grid.MaxQ());
  if (fixed != nullptr &&
      (fixed->scales.size(0) != rows || fixed->scales.size(1) != groups ||
       fixed->zeros.sizes() != fixed->scales.sizes() || fixed->g_idx.numel() != cols)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": the fixed grids do not match the layer's rows and groups"));
  }
  // Everything on the weight's device, in tensor ops over all rows; nothing is read back.
  const at::TensorOptions fopt = weight.options().dtype(at::kFloat);
  const at::Device dev = weight.device();
  const at::Tensor perm = factor.perm.to(dev);
  const at::Tensor u = factor.u.to(dev, at::kFloat);
  const at::Tensor diag = factor.diag.defined() ? factor.diag.to(dev, at::kFloat) : at::Tensor();
  const at::Tensor block_h = factor.h.defined() ? factor.h.to(dev, at::kFloat) : at::Tensor();

  at::Tensor w = weight.to(at::kFloat, /*non_blocking=*/false, /*copy=*/true);
  w.masked_fill_(factor.dead.to(dev).unsqueeze(0), 0.0f);

  // Grids decided before the loop ([rows, groups]) and the group of each column in quantization
  // order: given ones, or static groups. Static groups are fitted on the (dead-zeroed) original
  // weights, per original column group, with the same stage-1 search as dynamic groups (diag H or
  // the full block as importances when hessian_search is on; diag and h are in quantization order,
  // so put them back in column order first).
  at::Tensor scales, zeros;  // [rows, groups]
  at::Tensor group_of;       // [cols] int64, quantization order
  const bool fixed_grids = fixed != nullptr || (opt.static_groups && grouped);
  if (fixed != nullptr) {
    scales = fixed->scales.to(dev, at::kFloat);
    zeros = fixed->zeros.to(dev, at::kFloat);
    group_of = fixed->g_idx.to(dev, at::kLong).index({perm});
  } else if (fixed_grids) {
    const at::Tensor by_column = InversePermutation(perm);
    std::vector<GroupGrids> fits;
    if (block_h.defined()) {
      const at::Tensor h = block_h.index({by_column}).index({at::indexing::Slice(), by_column});
      for (int64_t gi = 0; gi < groups; ++gi) {
        const int64_t len = std::min(g, cols - gi * g);
        fits.push_back(FitGroupGridsWithHessianBlock(
            w.narrow(1, gi * g, len).contiguous(), h.narrow(0, gi * g, len).narrow(1, gi * g, len),
            opt.grid));
      }
    } else {
      const at::Tensor diag_by_column =
          diag.defined() ? at::empty_like(diag).index_copy_(0, perm, diag) : at::Tensor();
      const int64_t full = cols / g;  // whole groups in one search, a shorter last one alone
      GroupGrids whole = FitGrids(
          w.narrow(1, 0, full * g).reshape({rows, full, g}), opt.grid,
          diag.defined() ? diag_by_column.narrow(0, 0, full * g).reshape({full, g}) : at::Tensor());
      for (int64_t gi = 0; gi < full; ++gi) {
        fits.push_back(GroupGrids{whole.scale.select(1, gi), whole.zero.select(1, gi)});
      }
      if (full < groups) {
        fits.push_back(FitGrids(w.narrow(1, full * g, cols - full * g), opt.grid,
                                diag.defined() ? diag_by_column.narrow(0, full * g, cols - full * g)
                                               : at::Tensor()));
      }
    }
    std::vector<at::Tensor> s, z;
    for (const GroupGrids& f : fits) {
      s.push_back(f.scale);
      z.push_back(f.zero);
    }
    scales = at::stack(s, 1);
    zeros = at::stack(z, 1);
    group_of = at::div(perm, g, "floor");
  } else {
    scales = at::empty({rows, groups}, fopt);
    zeros = at::empty({rows, groups}, fopt);
    group_of = at::div(at::arange(cols, perm.options()), g, "floor");
  }

  if (opt.act_order) w = SelectColumns(w, perm);

  // Blocks hold whole groups, so a group's grid is always fitted on fully compensated weights.
  int64_t block = opt.block_size;
  if (grouped) block = g <= block ? g * (block / g) : g;

  at::Tensor q_perm = at::empty({rows, cols}, fopt);  // dequantized, quantization order
  at::Tensor codes_perm = at::empty({rows, cols}, weight.options().dtype(at::kByte));

  ColumnGrid grid;
  if (!grouped && !fixed_grids) {  // per channel: one grid per row, before any compensation
    GroupGrids fit = FitGrids(w, opt.grid, diag);
    scales.select(1, 0).copy_(fit.scale);
    zeros.select(1, 0).copy_(fit.zero);
    grid = ToColumnGrid(fit.scale, fit.zero, maxq);
  }

  const BlockBuffers buf(block, rows, fixed_grids, fopt);
  at::Tensor rounded = at::empty({1, rows}, fopt);
  MovingView w_i(buf.w), t_i(buf.t), q_i(buf.q), e_i(buf.e), later_w(buf.w), product(buf.product),
      u_later(buf.u), u_cc(buf.u);
  std::optional<MovingView> s_i, low_i, high_i;
  if (fixed_grids) s_i.emplace(buf.s), low_i.emplace(buf.low), high_i.emplace(buf.high);
  for (int64_t b0 = 0; b0 < cols; b0 += block) {
    const int64_t b1 = std::min(b0 + block, cols);
    const int64_t count = b1 - b0;
    const at::Tensor wt = buf.w.narrow(0, 0, count);
    wt.copy_(w.narrow(1, b0, count).t());
    buf.u.narrow(0, 0, count).narrow(1, 0, count).copy_(u.narrow(0, b0, count).narrow(1, b0, count));
    const at::Tensor in_block = group_of.narrow(0, b0, count);
    if (fixed_grids) {  // each column's grid, looked up through its group
      buf.s.narrow(0, 0, count).copy_(SelectColumns(scales, in_block).t());
      const at::Tensor z = SelectColumns(zeros, in_block).t();
      buf.low.narrow(0, 0, count).copy_(-z);
      buf.high.narrow(0, 0, count).copy_(maxq - z);
    }
    for (int64_t i = 0; i < count; ++i) {
      const int64_t c = b0 + i;
      if (fixed_grids) {
        grid = ColumnGrid{s_i->Rows(i, 1), low_i->Rows(i, 1), high_i->Rows(i, 1)};
      } else if (grouped && c % g == 0) {
        // The group's grids from its current (compensated) weights, all rows at once.
        const int64_t gi = c / g;
        const int64_t len = std::min(g, cols - c);
        const at::Tensor group_w = wt.narrow(0, i, len).t();  // [rows, len]
        GroupGrids fit =
            block_h.defined()
                ? FitGroupGridsWithHessianBlock(group_w.contiguous(),
                                                block_h.narrow(0, c, len).narrow(1, c, len), opt.grid)
                : FitGrids(group_w, opt.grid, diag.defined() ? diag.narrow(0, c, len) : at::Tensor());
        scales.select(1, gi).copy_(fit.scale);
        zeros.select(1, gi).copy_(fit.zero);
        grid = ToColumnGrid(fit.scale, fit.zero, maxq);
      }
      // QuantizeToCode, DequantizeCode and the scaled error, every row at once.
      const at::Tensor& w_c = w_i.Rows(i, 1);
      at::div_out(rounded, w_c, grid.scale).round_();
      at::clamp_out(t_i.Rows(i, 1), rounded, grid.low, grid.high);
      at::mul_out(q_i.Rows(i, 1), t_i.Rows(i, 1), grid.scale);
      at::Tensor& e_c = e_i.Rows(i, 1);
      at::sub_out(e_c, w_c, q_i.Rows(i, 1)).div_(u_cc.Set(1, 1, 1, 1, i * block + i));
      // Rank-1 update of the block's later columns: W[:, j] -= e * U[c, j], in two ops (a fused
      // multiply-add would round differently from the product and the difference taken apart).
      const int64_t later = count - i - 1;
      if (later > 0) {
        at::Tensor& p = product.Rows(0, later);
        at::mul_out(p, u_later.Set(later, 1, 1, 1, i * block + i + 1), e_c);
        later_w.Rows(i + 1, later).sub_(p);
      }
    }
    q_perm.narrow(1, b0, count).copy_(buf.q.narrow(0, 0, count).t());
    codes_perm.narrow(1, b0, count)
        .copy_((buf.t.narrow(0, 0, count) + SelectColumns(zeros, in_block).t()).t());
    if (b1 < cols) {
      // Lazy update of the columns after the block: W[:, b1:] -= E U[b0:b1, b1:].
      at::Tensor rest = w.narrow(1, b1, cols - b1);
      rest.sub_(at::matmul(buf.e.narrow(0, 0, count).t(),
                           u.narrow(0, b0, count).narrow(1, b1, cols - b1)));
    }
  }

  QuantizedLinear out;
  if (opt.act_order) {
    const at::Tensor inv_perm = InversePermutation(perm);
    out.weight = SelectColumns(q_perm, inv_perm);
    out.codes = SelectColumns(codes_perm, inv_perm);
  } else {  // the identity (PrepareGptq), as the weights were not permuted either
    out.weight = q_perm;
    out.codes = codes_perm;
  }
  out.group_size = g;
  out.bits = opt.grid.bits;
  out.sym = opt.grid.sym;
  out.g_idx = at::empty_like(group_of).index_copy_(0, perm, group_of).to(at::kInt);
  out.scales = scales;
  out.zeros = zeros;
  return out;
}

}  // namespace ptq
