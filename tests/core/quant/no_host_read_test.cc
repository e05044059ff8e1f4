// The quantizers read nothing back to the host inside a layer: GPTQ's column loop, RTN and the grid
// searches run with every tensor on the meta device, which has shapes but no data, so any .item(),
// data_ptr read or copy to the host throws there (checked first). Completing proves that on a CUDA
// device the loops never wait for the device.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "core/quant/block_hessian_grid.h"
#include "core/quant/gptq_quantizer.h"
#include "core/quant/grid_search.h"
#include "core/quant/rtn_quantizer.h"
#include "tests/core/quant/gptq_scalar_reference.h"

namespace ptq {
namespace {

const at::TensorOptions kMeta = at::TensorOptions().device(at::kMeta);

GptqFactor MetaFactor(int64_t cols, bool with_block) {
  GptqFactor f;
  f.u = at::empty({cols, cols}, kMeta.dtype(at::kFloat));
  f.perm = at::empty({cols}, kMeta.dtype(at::kLong));
  f.dead = at::empty({cols}, kMeta.dtype(at::kBool));
  f.diag = at::empty({cols}, kMeta.dtype(at::kFloat));
  if (with_block) f.h = at::empty({cols, cols}, kMeta.dtype(at::kFloat));
  return f;
}

TEST(NoHostReadTest, TheMetaDeviceRefusesHostReads) {
  const at::Tensor t = at::empty({4, 8}, kMeta);
  EXPECT_THROW(t.sum().item<float>(), c10::Error);
  EXPECT_THROW(t.data_ptr<float>(), c10::Error);
  EXPECT_THROW(t.to(at::kCPU), c10::Error);
  // The scalar loop this replaced reads host pointers: the meta device stops it.
  GptqOptions o;
  o.group_size = 4;
  EXPECT_THROW(ScalarGptqQuantizeWithFactor(t, MetaFactor(8, false), o), c10::Error);
}

TEST(NoHostReadTest, GptqColumnLoopRunsOnTheMetaDevice) {
  const int64_t rows = 12, cols = 80;  // groups of 32 end in a partial group
  const at::Tensor w = at::empty({rows, cols}, kMeta.dtype(at::kFloat));
  for (int64_t group : {int64_t{-1}, int64_t{32}}) {
    for (bool act_order : {false, true}) {
      for (bool static_groups : {false, true}) {
        for (int search = 0; search < 4; ++search) {  // min-max, MSE, diag(H), full block
          GptqOptions o;
          o.grid.bits = 3;
          o.group_size = group;
          o.act_order = act_order;
          o.static_groups = static_groups;
          o.block_size = 32;
          o.grid.mse = search > 0;
          o.grid.hessian_search = search > 1;
          o.grid.hessian_block = search > 2;
          const std::string label = absl::StrCat("group ", group, " act ", act_order, " static ",
                                                 static_groups, " search ", search);
          auto q = GptqQuantizeWithFactor(w, MetaFactor(cols, search > 2), o, "meta");
          ASSERT_TRUE(q.ok()) << q.status() << " " << label;
          EXPECT_TRUE(q->weight.is_meta()) << label;
          EXPECT_TRUE(q->codes.is_meta()) << label;
          EXPECT_TRUE(q->scales.is_meta()) << label;
          EXPECT_EQ(q->codes.sizes(), w.sizes()) << label;
          EXPECT_EQ(q->scales.size(1), group > 0 ? 3 : 1) << label;
        }
      }
    }
  }
  // Fixed grids (--requant-passes).
  FixedGrids grids{at::empty({rows, 3}, kMeta.dtype(at::kFloat)),
                   at::empty({rows, 3}, kMeta.dtype(at::kFloat)),
                   at::empty({cols}, kMeta.dtype(at::kInt))};
  GptqOptions o;
  o.group_size = 32;
  auto q = GptqQuantizeWithFactor(w, MetaFactor(cols, false), o, "meta", &grids);
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_TRUE(q->weight.is_meta());
}

TEST(NoHostReadTest, RoundToNearestAndGridSearchesRunOnTheMetaDevice) {
  const at::Tensor w = at::empty({12, 80}, kMeta.dtype(at::kFloat));
  for (bool mse : {false, true}) for (bool sym : {false, true}) {
    GridOptions o;
    o.mse = mse;
    o.sym = sym;
    QuantizedLinear q = RtnQuantize(w, o, 32);
    EXPECT_TRUE(q.weight.is_meta());
    EXPECT_EQ(q.scales.size(1), 3);
    o.hessian_search = true;
    GroupGrids g = FitGrids(w.view({12, 5, 16}), o, at::empty({5, 16}, kMeta.dtype(at::kFloat)));
    EXPECT_TRUE(g.scale.is_meta());
    EXPECT_EQ(g.zero.sizes(), (std::vector<int64_t>{12, 5}));
  }
  for (bool sym : {false, true}) {
    GridOptions o;
    o.mse = true;
    o.hessian_search = true;
    o.sym = sym;
    GroupGrids b = FitGroupGridsWithHessianBlock(w.narrow(1, 0, 16).contiguous(),
                                                 at::empty({16, 16}, kMeta.dtype(at::kFloat)), o);
    EXPECT_TRUE(b.scale.is_meta());
  }
}

}  // namespace
}  // namespace ptq
