// The tensor grids (grid_search.h) against the scalar ones (quant_grid.h), one row at a time: the
// same scale and zero for every row, range and option, ties and empty ranges included.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/quant/grid_search.h"

namespace ptq {
namespace {

struct Case {
  std::string name;
  GridOptions grid;
};

std::vector<Case> Cases() {
  std::vector<Case> cases;
  for (int bits : {2, 3, 4, 8}) {
    for (bool sym : {false, true}) {
      for (bool mse : {false, true}) {
        for (bool hessian : {false, true}) {
          for (bool zero_search : {false, true}) {
            if (!mse && (hessian || !zero_search)) continue;  // no search: nothing else matters
            if (sym && !zero_search) continue;                // symmetric grids search no zeros
            GridOptions g;
            g.bits = bits;
            g.sym = sym;
            g.mse = mse;
            g.hessian_search = hessian;
            g.zero_search = zero_search;
            g.min_zero = sym ? 0 : 1;
            cases.push_back({absl::StrCat("bits ", bits, " sym ", sym, " mse ", mse, " hessian ",
                                          hessian, " zero search ", zero_search),
                             g});
          }
        }
      }
    }
  }
  GridOptions coarse;  // another search grid, norm 2 (ATen's pow special-cases it), min_zero 0
  coarse.bits = 3;
  coarse.mse = true;
  coarse.mse_grid = 20;
  coarse.mse_max_shrink = 0.5;
  coarse.mse_norm = 2.0;
  cases.push_back({"coarse search norm 2", coarse});
  GridOptions exact = coarse;  // scales not rounded to float16
  exact.fp16_scales = false;
  exact.mse_norm = 2.4;
  cases.push_back({"float32 scales", exact});
  GridOptions sym_exact = exact;  // the symmetric search's covering scales unrounded
  sym_exact.sym = true;
  sym_exact.min_zero = 0;
  cases.push_back({"symmetric float32 scales", sym_exact});
  return cases;
}

// Heavy-tailed rows of different magnitudes, plus the rows the rules single out: all zero (empty
// range), all positive, all negative, constant, tiny (float16-subnormal scales), a single spike.
at::Tensor Rows(int64_t n, uint64_t seed) {
  at::manual_seed(seed);
  at::Tensor w = at::randn({24, n}) * at::rand({24, 1}) * 2 + 0.05 * at::randn({24, n}).pow(3);
  w[0].zero_();
  w[1] = w[1].abs();
  w[2] = -w[2].abs();
  w[3].fill_(0.37f);
  w[4] *= 1e-6;
  w[5].zero_();
  w[5][n / 2] = 1.5f;
  w[6] = at::round(w[6] * 4) / 4;  // coarse values: many candidates tie exactly
  return w;
}

TEST(GridSearchTest, GridsFromRangeEqualsGridFromRange) {
  at::manual_seed(1);
  std::vector<float> lo{0, 0, -1, -0.5f, 0, -1e-7f, -3e-5f, -70000, -2},
      hi{0, 1, 0, 2, 1e-7f, 0, 2e-5f, 1, 2};
  at::Tensor random = at::randn({2, 200}) * at::rand({1, 200}).pow(4) * 10;
  for (int64_t i = 0; i < 200; ++i) {
    lo.push_back(random[0][i].item<float>());
    hi.push_back(random[1][i].item<float>());
  }
  const at::Tensor lo_t = at::tensor(lo), hi_t = at::tensor(hi);
  for (const Case& c : Cases()) {
    GroupGrids grids = GridsFromRange(lo_t, hi_t, c.grid);
    for (size_t i = 0; i < lo.size(); ++i) {
      GridParams want = GridFromRange(lo[i], hi[i], c.grid);
      ASSERT_EQ(grids.scale[i].item<float>(), want.scale) << c.name << " " << lo[i] << " " << hi[i];
      ASSERT_EQ(grids.zero[i].item<float>(), want.zero) << c.name << " " << lo[i] << " " << hi[i];
    }
  }
}

TEST(GridSearchTest, FitGridsEqualsFitGridRowByRow) {
  for (int64_t n : {int64_t{16}, int64_t{57}, int64_t{128}}) {
    const at::Tensor w = Rows(n, 10 + n);
    const at::Tensor importance = (at::rand({n}) * 5 + 0.05).contiguous();
    int searched_differently = 0;  // the problems are ones where the searches disagree
    for (const Case& c : Cases()) {
      GroupGrids grids = FitGrids(w, c.grid, importance);
      for (int64_t r = 0; r < w.size(0); ++r) {
        const at::Tensor row = w[r].contiguous();
        GridParams want = FitGrid(row.data_ptr<float>(), n, c.grid, importance.data_ptr<float>());
        ASSERT_EQ(grids.scale[r].item<float>(), want.scale) << c.name << " n " << n << " row " << r;
        ASSERT_EQ(grids.zero[r].item<float>(), want.zero) << c.name << " n " << n << " row " << r;
        GridOptions minmax = c.grid;
        minmax.mse = false;
        if (FitGrid(row.data_ptr<float>(), n, minmax).scale != want.scale) ++searched_differently;
      }
    }
    EXPECT_GT(searched_differently, 100) << n;
  }
}

TEST(GridSearchTest, BatchDimensionsAndPerGroupImportancesEqualFitGridPerGroup) {
  // [rows, groups, g] with [groups, g] importances: GPTQ's static groups and RTN in one search.
  const int64_t rows = 10, groups = 3, g = 32;
  const at::Tensor w = Rows(groups * g, 7).narrow(0, 0, rows).contiguous();
  const at::Tensor importance = (at::rand({groups * g}) * 3 + 0.1).contiguous();
  GridOptions o;
  o.bits = 2;
  o.mse = true;
  o.hessian_search = true;
  o.min_zero = 1;
  GroupGrids grids = FitGrids(w.view({rows, groups, g}), o, importance.view({groups, g}));
  ASSERT_EQ(grids.scale.sizes(), (std::vector<int64_t>{rows, groups}));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t gi = 0; gi < groups; ++gi) {
      GridParams want = FitGrid(w.data_ptr<float>() + r * groups * g + gi * g, g, o,
                                importance.data_ptr<float>() + gi * g);
      EXPECT_EQ(grids.scale[r][gi].item<float>(), want.scale) << r << " " << gi;
      EXPECT_EQ(grids.zero[r][gi].item<float>(), want.zero) << r << " " << gi;
    }
  }
}

TEST(GridSearchTest, StridedRowsAndUnweightedCallsMatch) {
  // GPTQ hands the search a transposed view of its block; without importances the hessian search
  // is the unweighted one, as FitGrid without them.
  const at::Tensor wt = Rows(40, 3).t().contiguous();  // [40, 24]
  GridOptions o;
  o.bits = 3;
  o.mse = true;
  o.hessian_search = true;
  GroupGrids grids = FitGrids(wt.t(), o);
  for (int64_t r = 0; r < 24; ++r) {
    const at::Tensor row = wt.select(1, r).contiguous();
    GridParams want = FitGrid(row.data_ptr<float>(), 40, o);
    EXPECT_EQ(grids.scale[r].item<float>(), want.scale) << r;
    EXPECT_EQ(grids.zero[r].item<float>(), want.zero) << r;
  }
}

}  // namespace
}  // namespace ptq
