// The full-block Hessian grid search: with a diagonal H it picks exactly the grids of FitGrid's
// diag(H)-weighted search, and with a correlated H its grids are never worse on d^T H d than that
// search's (evaluated by brute force here).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "core/quant/block_hessian_grid.h"

namespace ptq {
namespace {

GridOptions Options(int bits, bool sym) {
  GridOptions o;
  o.bits = bits;
  o.sym = sym;
  o.mse = true;
  o.hessian_search = true;
  o.min_zero = sym ? 0 : 1;
  return o;
}

double Objective(const at::Tensor& w, GridParams g, const at::Tensor& h, int maxq) {
  at::Tensor q = at::clamp(at::round(w / g.scale) + g.zero, 0, maxq);
  at::Tensor d = (g.scale * (q - g.zero) - w).to(at::kDouble);
  return at::dot(d, at::mv(h.to(at::kDouble), d)).item<double>();
}

TEST(BlockHessianGridTest, DiagonalHessianGivesTheDiagonalSearch) {
  at::manual_seed(1);
  for (bool sym : {false, true}) {
    GridOptions o = Options(2, sym);
    at::Tensor w = at::randn({9, 32});
    at::Tensor diag = at::rand({32}) + 0.1;
    GroupGrids grids = FitGroupGridsWithHessianBlock(w, at::diag(diag), o);
    for (int64_t r = 0; r < 9; ++r) {
      at::Tensor row = w[r].contiguous();
      GridParams ref = FitGrid(row.data_ptr<float>(), 32, o, diag.contiguous().data_ptr<float>());
      EXPECT_FLOAT_EQ(grids.scale[r].item<float>(), ref.scale) << r;
      EXPECT_FLOAT_EQ(grids.zero[r].item<float>(), ref.zero) << r;
    }
  }
}

TEST(BlockHessianGridTest, NeverWorseThanTheDiagonalSearchOnTheFullObjective) {
  at::manual_seed(2);
  GridOptions o = Options(2, false);
  at::Tensor x = at::matmul(at::randn({256, 16}), at::randn({16, 16}) + 2 * at::eye(16));
  at::Tensor h = at::matmul(x.t(), x) / 256;  // strongly correlated inputs
  at::Tensor w = at::randn({20, 16});
  GroupGrids grids = FitGroupGridsWithHessianBlock(w, h, o);
  at::Tensor diag = h.diagonal().contiguous();
  double block_total = 0, diag_total = 0;
  for (int64_t r = 0; r < 20; ++r) {
    at::Tensor row = w[r].contiguous();
    GridParams ref = FitGrid(row.data_ptr<float>(), 16, o, diag.data_ptr<float>());
    GridParams mine{grids.scale[r].item<float>(), grids.zero[r].item<float>()};
    const double a = Objective(row, mine, h, o.MaxQ()), b = Objective(row, ref, h, o.MaxQ());
    EXPECT_LE(a, b * (1 + 1e-5)) << r;
    block_total += a;
    diag_total += b;
  }
  EXPECT_LT(block_total, diag_total);  // and strictly better somewhere
}

TEST(BlockHessianGridTest, ZeroSearchNeverLosesAndSometimesShiftsTheZero) {
  // The floor/ceil zeros are a superset of round(-lo/s): never worse on d^T H d, better somewhere.
  at::manual_seed(3);
  at::Tensor x = at::matmul(at::randn({256, 16}), at::randn({16, 16}) + 2 * at::eye(16));
  at::Tensor h = at::matmul(x.t(), x) / 256;
  at::Tensor w = at::randn({40, 16});
  for (int bits : {2, 3}) {
    GridOptions on = Options(bits, false), off = on;
    off.zero_search = false;
    GroupGrids a = FitGroupGridsWithHessianBlock(w, h, on), b = FitGroupGridsWithHessianBlock(w, h, off);
    int better = 0;
    for (int64_t r = 0; r < 40; ++r) {
      const double ea = Objective(w[r], {a.scale[r].item<float>(), a.zero[r].item<float>()}, h, on.MaxQ());
      const double eb = Objective(w[r], {b.scale[r].item<float>(), b.zero[r].item<float>()}, h, on.MaxQ());
      EXPECT_LE(ea, eb * (1 + 1e-5)) << r;
      if (ea < eb * (1 - 1e-4)) ++better;
      EXPECT_GE(a.zero[r].item<float>(), 1.0f);
      EXPECT_LE(a.zero[r].item<float>(), static_cast<float>(on.MaxQ()));
    }
    EXPECT_GT(better, 0) << bits;
  }
}

}  // namespace
}  // namespace ptq
