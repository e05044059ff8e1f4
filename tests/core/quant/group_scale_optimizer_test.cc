// The scale refinements and BoA's row loop without host round trips:
// - bit for bit the same as the implementations before the change, which decided on the host with
//   .item() (kept here as references): byte-identical checkpoints are the contract;
// - on the meta device, where a tensor has no data: .item(), a copy to the host, nonzero() or
//   at::equal throw there, as does mixing in a CPU tensor (data_ptr throws in libtorch 1.13; a host
//   loop over it could not run anyway), so finishing proves none of them runs.
//   libtorch 1.13 has no C++ meta kernel for a few ops the code uses (index_select, dot, where,
//   linalg_solve_triangular); the test registers shape-only ones for those that fail, which read
//   nothing either. What meta cannot see: a CUDA kernel that synchronises on its own (linalg error
//   checks, e.g. cholesky's info); the code under test calls none inside its loops.
#include <ATen/ATen.h>
#include <ATen/ExpandUtils.h>
#include <gtest/gtest.h>
#include <torch/library.h>

#include <memory>
#include <vector>

#include "core/quant/boa_quantizer.h"
#include "core/quant/fp16_scale.h"
#include "core/quant/gptq_quantizer.h"
#include "core/quant/group_scale_optimizer.h"

namespace ptq {
namespace {

at::Tensor RandomSpd(int64_t n, uint64_t seed, double correlation = 1.0) {
  at::manual_seed(seed);
  at::Tensor a = at::randn({n, n}, at::kDouble) * correlation + at::eye(n, at::kDouble);
  at::Tensor x = at::matmul(at::randn({4 * n, n}, at::kDouble), a);
  return at::matmul(x.t(), x) / (4.0 * n);
}

// ---- References: the implementations before the change (host decisions through .item()). ----

double ReferenceRefine(QuantizedLinear& q, const at::Tensor& target, const at::Tensor& hessian,
                       int iterations) {
  at::Tensor h = hessian.to(at::kDouble);
  const int64_t groups = q.scales.size(1);
  at::Tensor g_idx = q.g_idx.to(at::kLong);
  at::Tensor v = q.codes.to(at::kDouble) - q.zeros.to(at::kDouble).index_select(1, g_idx);
  at::Tensor scales = q.scales.to(at::kDouble).clone();
  at::Tensor residual = target.to(at::kDouble) - scales.index_select(1, g_idx) * v;
  at::Tensor hr = at::matmul(residual, h);
  std::vector<at::Tensor> columns(groups);
  for (int64_t g = 0; g < groups; ++g) columns[g] = (g_idx == g).nonzero().squeeze(1);
  for (int it = 0; it < iterations; ++it) {
    for (int64_t g = 0; g < groups; ++g) {
      const at::Tensor& cols = columns[g];
      if (cols.numel() == 0) continue;
      at::Tensor vg = v.index_select(1, cols);
      at::Tensor h_gg = h.index_select(0, cols).index_select(1, cols);
      at::Tensor num = (vg * hr.index_select(1, cols)).sum(1);
      at::Tensor den = (at::matmul(vg, h_gg) * vg).sum(1);
      at::Tensor old_s = scales.select(1, g);
      at::Tensor new_s = at::where(den > 0, old_s + num / den.clamp_min(1e-300), old_s);
      new_s = RoundScalesToFp16(new_s);
      at::Tensor d = new_s - old_s;
      at::Tensor change = -2 * d * num + d * d * den;
      d = at::where(change < 0, d, at::zeros_like(d));
      scales.select(1, g).add_(d);
      residual.index_add_(1, cols, -(d.unsqueeze(1) * vg));
      hr.sub_(d.unsqueeze(1) * at::matmul(vg, h.index_select(0, cols)));
    }
  }
  q.scales = scales.to(at::kFloat);
  q.weight = DequantizeLinear(q);
  return LayerLoss(target, q.weight, hessian);
}

double ReferenceRefineKronecker(QuantizedLinear& q, const at::Tensor& target, const at::Tensor& h_in,
                                const std::vector<at::Tensor>& h_out, int iterations) {
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
    h_g[g] = hi.index_select(0, columns[g]);
    h_gg[g] = h_g[g].index_select(1, columns[g]);
  }
  at::Tensor t = target.to(at::kDouble);
  for (int64_t h = 0; h < heads; ++h) {
    at::Tensor ho = h_out[h].to(at::kDouble);
    at::Tensor rows_v = v.narrow(0, h * hd, hd);
    at::Tensor rows_s = scales.narrow(0, h * hd, hd);
    at::Tensor residual = t.narrow(0, h * hd, hd) - rows_s.index_select(1, g_idx) * rows_v;
    at::Tensor grad = at::matmul(at::matmul(ho, residual), hi);
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
          if (!(-2 * d * num + d * d * den < 0)) continue;
          rows_s[r][g].fill_(new_s);
          grad.sub_(d * at::outer(ho.select(1, r), at::matmul(vg, h_g[g])));
        }
      }
    }
  }
  q.scales = scales.to(at::kFloat);
  q.weight = DequantizeLinear(q);
  return KroneckerLoss(target, q.weight, h_in, h_out);
}

// A few BoA problems: group sizes (grouped, per-channel, a short last group), act-order columns, and
// scales off the float16 grid. From a float16 scale, rounding the optimal step to the nearest float16
// never raises the loss; from one off the grid it can, which is what the no-increase guard is for.
struct Problem {
  at::Tensor w, h_in;
  std::vector<at::Tensor> h_out;
  QuantizedLinear q;
};

std::vector<Problem> Problems() {
  std::vector<Problem> out;
  struct Shape {
    int64_t in, group;
    bool act_order, off_grid;
  };
  const std::vector<Shape> shapes = {
      {32, 8, false, false}, {32, 8, true, false}, {40, 16, true, true}, {24, -1, false, true},
      {40, 16, false, false}};
  uint64_t seed = 100;
  for (const Shape& s : shapes) {
    Problem p;
    const int64_t heads = 2, hd = 6;
    at::manual_seed(seed);
    p.w = at::randn({heads * hd, s.in});
    p.h_in = RandomSpd(s.in, seed + 1, 2.0);
    p.h_out = {RandomSpd(hd, seed + 2, 3.0), RandomSpd(hd, seed + 3, 3.0)};
    BoaOptions o;
    o.gptq.grid.bits = 2 + seed % 2;
    o.gptq.group_size = s.group;
    o.gptq.act_order = s.act_order;
    o.joint_rows = 2;
    auto q = BoaQuantize(p.w, p.h_in, p.h_out, o, "t");
    EXPECT_TRUE(q.ok()) << q.status();
    p.q = *q;
    if (s.off_grid) {
      p.q.scales = p.q.scales * (1 + 0.3 * at::rand(p.q.scales.sizes()));
      p.q.weight = DequantizeLinear(p.q);
    }
    out.push_back(p);
    seed += 10;
  }
  return out;
}

void ExpectSameRows(const QuantizedLinear& a, const QuantizedLinear& b) {
  EXPECT_TRUE(at::equal(a.scales, b.scales));
  EXPECT_TRUE(at::equal(a.weight, b.weight));
  EXPECT_TRUE(at::equal(a.codes, b.codes));
}

// The heads run side by side now; on these problems every step still takes the same bits.
TEST(GroupScaleOptimizerTest, KroneckerRefinementMatchesTheHostDecidedOneBitForBit) {
  for (Problem& p : Problems()) {
    // A head with a dead output row (H_out_rr = 0): that row's scales must not move.
    std::vector<at::Tensor> h_out = p.h_out;
    h_out[1] = h_out[1].clone();
    h_out[1].select(0, 2).zero_();
    h_out[1].select(1, 2).zero_();
    for (const std::vector<at::Tensor>* ho : {&p.h_out, &h_out}) {
      for (int iterations : {1, 3}) {
        QuantizedLinear ours = p.q, ref = p.q;
        const double loss = RefineGroupScalesKronecker(ours, p.w, p.h_in, *ho, iterations).item<double>();
        const double ref_loss = ReferenceRefineKronecker(ref, p.w, p.h_in, *ho, iterations);
        ExpectSameRows(ours, ref);
        // The loss sums all heads at once, the reference head by head: the last bits may differ.
        EXPECT_NEAR(loss, ref_loss, 1e-12 * ref_loss);
        EXPECT_FALSE(at::equal(ours.scales, p.q.scales)) << "the refinement moved nothing";
        if (ho == &h_out) EXPECT_TRUE(at::equal(ours.scales[8], p.q.scales[8]));  // head 1, row 2
      }
    }
  }
}

// Per-channel scales set to their exact optimum (off the float16 grid), H_out = I so rows decouple:
// every rounded step moves away from the optimum, raises the loss and must be skipped.
TEST(GroupScaleOptimizerTest, StepsThatTheRoundingMakesWorseAreSkipped) {
  Problem p = Problems()[3];
  ASSERT_EQ(p.q.scales.size(1), 1);
  at::Tensor h = p.h_in.to(at::kDouble);
  at::Tensor v = p.q.codes.to(at::kDouble) - p.q.zeros.to(at::kDouble);  // one group: [out, in]
  at::Tensor hv = at::matmul(v, h);
  at::Tensor best = (hv * p.w.to(at::kDouble)).sum(1) / (hv * v).sum(1);  // argmin_s |w - s v|_H
  QuantizedLinear start = p.q;
  start.scales = best.to(at::kFloat).unsqueeze(1);
  start.weight = DequantizeLinear(start);
  ASSERT_FALSE(at::equal(start.scales, RoundScalesToFp16(start.scales)));
  const std::vector<at::Tensor> identity(2, at::eye(6, at::kDouble));
  QuantizedLinear ours = start, ref = start;
  const double ref_loss = ReferenceRefineKronecker(ref, p.w, p.h_in, identity, 1);
  EXPECT_NEAR(RefineGroupScalesKronecker(ours, p.w, p.h_in, identity, 1).item<double>(), ref_loss,
              1e-12 * ref_loss);
  ExpectSameRows(ours, ref);
  EXPECT_TRUE(at::equal(ours.scales, start.scales));
  QuantizedLinear rows = start, rows_ref = start;
  EXPECT_EQ(RefineGroupScales(rows, p.w, p.h_in, 1).item<double>(),
            ReferenceRefine(rows_ref, p.w, p.h_in, 1));
  ExpectSameRows(rows, rows_ref);
  EXPECT_TRUE(at::equal(rows.scales, start.scales));
}

TEST(GroupScaleOptimizerTest, RowWiseRefinementMatchesTheNonzeroColumnsOneBitForBit) {
  for (Problem& p : Problems()) {
    QuantizedLinear ours = p.q, ref = p.q;
    const double loss = RefineGroupScales(ours, p.w, p.h_in, 2).item<double>();
    EXPECT_EQ(loss, ReferenceRefine(ref, p.w, p.h_in, 2));
    ExpectSameRows(ours, ref);
    // Per head with each head's own H: the same as refining each head's rows alone.
    std::vector<at::Tensor> h_heads = {p.h_in, RandomSpd(p.w.size(1), 7)};
    QuantizedLinear per_head = p.q;
    double expected = 0;
    at::Tensor scales = p.q.scales.clone();
    for (int64_t h = 0; h < 2; ++h) {
      QuantizedLinear part = p.q;
      part.weight = p.q.weight.narrow(0, h * 6, 6).clone();
      part.codes = p.q.codes.narrow(0, h * 6, 6);
      part.scales = p.q.scales.narrow(0, h * 6, 6).clone();
      part.zeros = p.q.zeros.narrow(0, h * 6, 6);
      expected += ReferenceRefine(part, p.w.narrow(0, h * 6, 6), h_heads[h], 2);
      scales.narrow(0, h * 6, 6).copy_(part.scales);
    }
    EXPECT_EQ(RefineGroupScalesPerHead(per_head, p.w, h_heads, 2).item<double>(), expected);
    EXPECT_TRUE(at::equal(per_head.scales, scales));
    EXPECT_TRUE(at::equal(per_head.weight, DequantizeLinear(per_head)));
  }
}

TEST(GroupScaleOptimizerTest, GroupColumnsAreTheNonzeroColumnsOfEachGroup) {
  for (Problem& p : Problems()) {
    const std::vector<at::Tensor> columns = GroupColumns(p.q);
    ASSERT_EQ(static_cast<int64_t>(columns.size()), p.q.scales.size(1));
    for (size_t g = 0; g < columns.size(); ++g) {
      EXPECT_TRUE(at::equal(columns[g], (p.q.g_idx.to(at::kLong) == static_cast<int64_t>(g)).nonzero().squeeze(1)));
    }
  }
  // A g_idx whose groups are not group_size columns each is refused (checked on the CPU).
  QuantizedLinear q = Problems()[0].q;
  q.g_idx = q.g_idx.clone();
  q.g_idx[0] = 1;
  EXPECT_THROW(GroupColumns(q), c10::Error);
}

// ---- The meta device ----

at::Tensor MetaIndexSelect(const at::Tensor& self, int64_t dim, const at::Tensor& index) {
  std::vector<int64_t> sizes = self.sizes().vec();
  sizes[c10::maybe_wrap_dim(dim, self.dim())] = index.numel();
  return at::empty(sizes, self.options());
}
at::Tensor MetaDot(const at::Tensor& a, const at::Tensor& b) {
  TORCH_CHECK(a.dim() == 1 && a.sizes() == b.sizes(), "dot: shapes");
  return at::empty({}, a.options());
}
at::Tensor MetaWhere(const at::Tensor& condition, const at::Tensor& a, const at::Tensor& b) {
  const std::vector<int64_t> sizes = at::infer_size(at::infer_size(condition.sizes(), a.sizes()), b.sizes());
  return at::empty(sizes, a.options().dtype(at::result_type(a, b)));
}
at::Tensor MetaSolveTriangular(const at::Tensor& a, const at::Tensor& b, bool, bool, bool) {
  TORCH_CHECK(a.size(-1) == b.size(-2), "solve_triangular: shapes");
  return at::empty(b.sizes(), b.options());
}

// Shape-only meta kernels for the ops this libtorch cannot run on meta (once per process).
void EnsureMetaKernels() {
  static std::unique_ptr<torch::Library> library = [] {
    auto lib = std::make_unique<torch::Library>(torch::Library::IMPL, "aten", c10::DispatchKey::Meta,
                                                __FILE__, __LINE__);
    const auto meta = at::TensorOptions().dtype(at::kDouble).device(at::kMeta);
    const at::Tensor v = at::empty({3}, meta), m = at::empty({3, 3}, meta);
    auto missing = [](auto&& op) {
      try {
        op();
        return false;
      } catch (const c10::Error&) {
        return true;
      }
    };
    if (missing([&] { v.index_select(0, at::empty({2}, meta.dtype(at::kLong))); })) {
      lib->impl("index_select", TORCH_FN(MetaIndexSelect));
    }
    if (missing([&] { at::dot(v, v); })) lib->impl("dot", TORCH_FN(MetaDot));
    if (missing([&] { at::where(v > 0, v, v); })) lib->impl("where.self", TORCH_FN(MetaWhere));
    if (missing([&] { at::linalg_solve_triangular(m, m, /*upper=*/true); })) {
      lib->impl("linalg_solve_triangular", TORCH_FN(MetaSolveTriangular));
    }
    return lib;
  }();
}

at::Tensor ToMeta(const at::Tensor& t) { return at::empty(t.sizes(), t.options().device(at::kMeta)); }

QuantizedLinear ToMeta(const QuantizedLinear& q) {
  QuantizedLinear m = q;
  for (at::Tensor QuantizedLinear::*field :
       {&QuantizedLinear::weight, &QuantizedLinear::codes, &QuantizedLinear::scales,
        &QuantizedLinear::zeros, &QuantizedLinear::g_idx}) {
    m.*field = ToMeta(q.*field);
  }
  return m;
}

void ExpectOnMeta(const QuantizedLinear& q, const QuantizedLinear& like) {
  EXPECT_TRUE(q.scales.is_meta() && q.weight.is_meta());
  EXPECT_EQ(q.scales.sizes(), like.scales.sizes());
  EXPECT_EQ(q.scales.scalar_type(), at::kFloat);
  EXPECT_EQ(q.weight.sizes(), like.weight.sizes());
}

TEST(NoHostSyncTest, TheMetaDeviceCatchesHostReads) {
  EnsureMetaKernels();
  const at::Tensor x = at::empty({4}, at::TensorOptions().dtype(at::kDouble).device(at::kMeta));
  EXPECT_THROW(x.sum().item<double>(), c10::Error);
  EXPECT_THROW(x.to(at::kCPU), c10::Error);
  EXPECT_THROW((x > 0).nonzero(), c10::Error);
  EXPECT_THROW(x + at::ones({4}, at::kDouble), c10::Error);  // a CPU tensor mixed in
  // And so the implementations that decided on the host fail there.
  Problem p = Problems()[1];
  QuantizedLinear q = ToMeta(p.q);
  std::vector<at::Tensor> h_out = {ToMeta(p.h_out[0]), ToMeta(p.h_out[1])};
  EXPECT_THROW(ReferenceRefineKronecker(q, ToMeta(p.w), ToMeta(p.h_in), h_out, 1), c10::Error);
  EXPECT_THROW(ReferenceRefine(q, ToMeta(p.w), ToMeta(p.h_in), 1), c10::Error);
}

TEST(NoHostSyncTest, ScaleRefinementsRunOnTheMetaDevice) {
  EnsureMetaKernels();
  for (Problem& p : Problems()) {
    const at::Tensor w = ToMeta(p.w), h_in = ToMeta(p.h_in);
    const std::vector<at::Tensor> h_out = {ToMeta(p.h_out[0]), ToMeta(p.h_out[1])};
    QuantizedLinear q = ToMeta(p.q);
    at::Tensor loss = RefineGroupScalesKronecker(q, w, h_in, h_out, 2);
    EXPECT_TRUE(loss.is_meta() && loss.dim() == 0);
    ExpectOnMeta(q, p.q);
    q = ToMeta(p.q);
    loss = RefineGroupScales(q, w, h_in, 2);
    EXPECT_TRUE(loss.is_meta() && loss.dim() == 0);
    ExpectOnMeta(q, p.q);
    q = ToMeta(p.q);
    loss = RefineGroupScalesPerHead(q, w, {h_in, h_in}, 2);
    EXPECT_TRUE(loss.is_meta() && loss.dim() == 0);
    ExpectOnMeta(q, p.q);
    EXPECT_TRUE(KroneckerLossOnDevice(w, q.weight, h_in, h_out).is_meta());
    EXPECT_TRUE(LayerLossOnDevice(w, q.weight, h_in).is_meta());
  }
}

// BoA's own loop over the heads (row orders, row blocks, compensation, rows put back) on meta. Its
// two outside steps, GPTQ's column loop and the Cholesky factor with its damping retries, read the
// host by design (gptq_quantizer); here they are shape-only stand-ins.
TEST(NoHostSyncTest, BoaHeadLoopRunsOnTheMetaDevice) {
  EnsureMetaKernels();
  const int64_t heads = 2, hd = 20, in = 16, groups = 2;
  const auto meta = at::TensorOptions().device(at::kMeta);
  const at::Tensor w = at::empty({heads * hd, in}, meta.dtype(at::kFloat));
  const std::vector<at::Tensor> h_out(heads, at::empty({hd, hd}, meta.dtype(at::kDouble)));
  int blocks = 0;
  BoaHeadSteps steps{
      [](int64_t, const at::Tensor& h) -> absl::StatusOr<at::Tensor> {
        return at::linalg_cholesky(h, true);
      },
      [&](const at::Tensor& rows, const FixedGrids* grids) -> absl::StatusOr<QuantizedLinear> {
        EXPECT_TRUE(rows.is_meta());
        if (grids != nullptr) EXPECT_TRUE(grids->scales.is_meta());
        ++blocks;
        QuantizedLinear q;
        q.weight = rows.round();
        q.codes = rows.to(at::kByte);
        q.scales = at::empty({rows.size(0), groups}, rows.options());
        q.zeros = at::empty({rows.size(0), groups}, rows.options());
        q.g_idx = at::arange(in, rows.options().dtype(at::kInt)).div(in / groups, "floor");
        return q;
      }};
  const FixedGrids fixed{at::empty({heads * hd, groups}, meta.dtype(at::kFloat)),
                         at::empty({heads * hd, groups}, meta.dtype(at::kFloat)),
                         at::empty({in}, meta.dtype(at::kInt))};
  for (bool act_order_rows : {false, true}) {
    for (const FixedGrids* grids : {static_cast<const FixedGrids*>(nullptr), &fixed}) {
      // Head by head, row block by row block: 16 rows a block gives rows 0-15 and 16-19 of each
      // head, 3 rows seven blocks of each.
      for (auto [joint_rows, calls] : {std::pair<int64_t, int>{16, 2 * 2}, {3, 2 * 7}}) {
        BoaOptions o;
        o.joint_rows = joint_rows;
        o.act_order_rows = act_order_rows;
        blocks = 0;
        auto q = BoaQuantizeHeads(w, h_out, o, grids, steps);
        ASSERT_TRUE(q.ok()) << q.status();
        EXPECT_EQ(blocks, calls) << joint_rows;
        EXPECT_TRUE(q->weight.is_meta() && q->codes.is_meta());
        EXPECT_EQ(q->weight.sizes(), w.sizes());
      }
    }
  }
}

}  // namespace
}  // namespace ptq
