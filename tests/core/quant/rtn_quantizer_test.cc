// RtnQuantize (tensor ops) against round-to-nearest written here with the scalar grid functions, row
// by row and group by group: equal bit for bit, partial last groups and searched grids included.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/quant/rtn_quantizer.h"

namespace ptq {
namespace {

QuantizedLinear ScalarRtn(const at::Tensor& weight, const GridOptions& grid, int64_t group_size) {
  at::Tensor w = weight.to(at::kFloat).contiguous();
  const int64_t rows = w.size(0), cols = w.size(1);
  const int64_t g = (group_size <= 0 || group_size >= cols) ? cols : group_size;
  const int64_t groups = (cols + g - 1) / g;
  QuantizedLinear out;
  out.weight = at::empty_like(w);
  out.codes = at::empty({rows, cols}, at::kByte);
  out.scales = at::empty({rows, groups});
  out.zeros = at::empty({rows, groups});
  const float* pw = w.data_ptr<float>();
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t gi = 0; gi < groups; ++gi) {
      const float* src = pw + r * cols + gi * g;
      const int64_t len = std::min(g, cols - gi * g);
      GridParams p = FitGrid(src, len, grid);
      out.scales.data_ptr<float>()[r * groups + gi] = p.scale;
      out.zeros.data_ptr<float>()[r * groups + gi] = p.zero;
      for (int64_t k = 0; k < len; ++k) {
        const float code = QuantizeToCode(src[k], p, grid.MaxQ());
        out.codes.data_ptr<uint8_t>()[r * cols + gi * g + k] = static_cast<uint8_t>(code);
        out.weight.data_ptr<float>()[r * cols + gi * g + k] = DequantizeCode(code, p);
      }
    }
  }
  return out;
}

TEST(RtnQuantizerTest, EqualsScalarRoundToNearestBitForBit) {
  at::manual_seed(3);
  at::Tensor w = at::randn({14, 88}) * at::rand({14, 1}) + 0.03 * at::randn({14, 88}).pow(3);
  w[2].zero_();
  w[3] = w[3].abs();
  for (int bits : {2, 3, 4, 8}) {
    for (int64_t group : {int64_t{-1}, int64_t{16}, int64_t{32}}) {  // 88 = 2 x 32 + 24
      for (bool sym : {false, true}) {
        for (bool mse : {false, true}) {
          GridOptions o;
          o.bits = bits;
          o.sym = sym;
          o.mse = mse;
          o.min_zero = sym ? 0 : 1;
          const std::string label =
              absl::StrCat("bits ", bits, " group ", group, " sym ", sym, " mse ", mse);
          QuantizedLinear ours = RtnQuantize(w, o, group);
          QuantizedLinear ref = ScalarRtn(w, o, group);
          EXPECT_TRUE(at::equal(ours.codes, ref.codes)) << label;
          EXPECT_TRUE(at::equal(ours.scales, ref.scales)) << label;
          EXPECT_TRUE(at::equal(ours.zeros, ref.zeros)) << label;
          EXPECT_TRUE(at::equal(ours.weight, ref.weight)) << label;
          const int64_t g = group > 0 ? group : 88;
          EXPECT_TRUE(at::equal(ours.g_idx, at::arange(88, at::kInt).div(g, "floor"))) << label;
          EXPECT_EQ(ours.group_size, g) << label;
        }
      }
    }
  }
}

TEST(RtnQuantizerTest, QuantizesBfloat16WeightsThroughFloat32) {
  // bfloat16 weights (as the checkpoints store them) are quantized from their float32 values.
  at::manual_seed(4);
  at::Tensor w = at::randn({6, 64}).to(at::kBFloat16);
  GridOptions o;
  QuantizedLinear a = RtnQuantize(w, o, 32), b = ScalarRtn(w.to(at::kFloat), o, 32);
  EXPECT_EQ(a.weight.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::equal(a.weight, b.weight));
  EXPECT_TRUE(at::equal(a.codes, b.codes));
}

}  // namespace
}  // namespace ptq
