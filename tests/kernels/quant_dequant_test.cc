// Quantize/dequantize with given grids: the reference against the formula written with ATen ops
// (round half to even, clamp, per-group scales gathered by column), the shared float16 scale
// rounding against common/dtype's converter, and the CUDA kernel against the reference.
#include "kernels/quant_dequant.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <vector>

#include "common/dtype.h"
#include "kernels/grid_fit.h"
#include "tests/kernels/cuda_test_util.h"
#include "core/quant/quant_grid.h"

namespace ptq::kernels {
namespace {

// Reference and ATen compute w / s, round, add, clamp, subtract and multiply in float32 in the same
// order: equal bits.
constexpr float kAtenTol = 0.0f;
constexpr float kCudaTol = 0.0f;

struct Problem {
  at::Tensor w, scales, zeros, g_idx;
  int64_t group_size = 0;
  int bits = 4;
};

Problem MakeProblem(int64_t rows, int64_t cols, int64_t group_size, int bits, bool act_order,
                    uint64_t seed) {
  at::manual_seed(seed);
  Problem p;
  p.bits = bits;
  p.group_size = group_size;
  const int64_t groups = group_size > 0 ? (cols + group_size - 1) / group_size : 1;
  p.w = at::randn({rows, cols}, at::kFloat);
  p.scales = at::rand({rows, groups}, at::kFloat) * 0.5f + 0.05f;
  p.zeros = at::randint(0, 1 << bits, {rows, groups}, at::kFloat);
  if (act_order) {
    at::Tensor perm = at::randperm(cols, at::kLong);
    p.g_idx = at::div(perm, std::max<int64_t>(group_size, 1), "floor").to(at::kInt).contiguous();
  }
  return p;
}

QuantDequantArgs ArgsFor(Problem& p, uint8_t* codes, float* deq) {
  QuantDequantArgs a;
  a.rows = p.w.size(0);
  a.cols = p.w.size(1);
  a.w = p.w.data_ptr<float>();
  a.scales = p.scales.data_ptr<float>();
  a.zeros = p.zeros.data_ptr<float>();
  a.groups = p.scales.size(1);
  a.group_size = p.group_size;
  a.g_idx = p.g_idx.defined() ? p.g_idx.data_ptr<int32_t>() : nullptr;
  a.bits = p.bits;
  a.codes = codes;
  a.deq = deq;
  return a;
}

TEST(QuantDequantRefTest, MatchesAtenFormula) {
  uint64_t seed = 1;
  for (int bits : {2, 3, 4, 8}) {
    for (bool act_order : {false, true}) {
      Problem p = MakeProblem(13, 96, 32, bits, act_order, seed++);
      at::Tensor codes = at::zeros({13, 96}, at::kByte);
      at::Tensor deq = at::zeros({13, 96}, at::kFloat);
      ASSERT_TRUE(QuantDequantRef(ArgsFor(p, codes.data_ptr<uint8_t>(), deq.data_ptr<float>())).ok());
      at::Tensor gi = p.g_idx.defined() ? p.g_idx.to(at::kLong) : at::div(at::arange(96, at::kLong), 32, "floor");
      at::Tensor s = p.scales.index_select(1, gi), z = p.zeros.index_select(1, gi);
      at::Tensor q = at::clamp(at::round(p.w / s) + z, 0, (1 << bits) - 1);
      SCOPED_TRACE(::testing::Message() << "bits " << bits << " act_order " << act_order);
      EXPECT_TRUE(at::equal(codes, q.to(at::kByte)));
      EXPECT_LE((deq - s * (q - z)).abs().max().item<float>(), kAtenTol);
    }
  }
}

TEST(QuantDequantRefTest, PerRowGridWhenGroupSizeIsZero) {
  Problem p = MakeProblem(5, 40, 0, 4, false, 9);
  at::Tensor codes = at::zeros({5, 40}, at::kByte);
  ASSERT_TRUE(QuantDequantRef(ArgsFor(p, codes.data_ptr<uint8_t>(), nullptr)).ok());
  at::Tensor q = at::clamp(at::round(p.w / p.scales) + p.zeros, 0, 15);
  EXPECT_TRUE(at::equal(codes, q.to(at::kByte)));
}

TEST(QuantDequantRefTest, RejectsBadGroups) {
  Problem p = MakeProblem(2, 64, 32, 4, false, 3);
  QuantDequantArgs a = ArgsFor(p, nullptr, nullptr);
  a.groups = 1;  // two column groups, one grid
  EXPECT_EQ(QuantDequantRef(a).code(), absl::StatusCode::kInvalidArgument);
  std::vector<int32_t> g_idx(64, 5);
  a.groups = 2;
  a.g_idx = g_idx.data();
  EXPECT_EQ(QuantDequantRef(a).code(), absl::StatusCode::kInvalidArgument);
}

TEST(GridFitTest, RoundToHalfMatchesCommonConverter) {
  at::manual_seed(2);
  at::Tensor x = at::cat({at::rand({20000}) * 4.0f, at::rand({20000}) * 1e-4f,
                          at::rand({2000}) * 1e-7f, at::rand({200}) * 60000.0f});
  const float* px = x.data_ptr<float>();
  for (int64_t i = 0; i < x.numel(); ++i) {
    ASSERT_EQ(RoundToHalf(px[i]), HalfToFloat(FloatToHalf(px[i]))) << px[i];
  }
}

TEST(GridFitTest, GridFromRangeMatchesWorkerGrid) {
  at::manual_seed(3);
  at::Tensor x = at::randn({3000}) * 2.0f;
  const float* px = x.data_ptr<float>();
  for (int bits : {2, 3, 4, 8}) {
    for (bool sym : {false, true}) {
      for (int min_zero : {0, 1}) {
        GridOptions o;
        o.bits = bits;
        o.sym = sym;
        o.min_zero = min_zero;
        for (int64_t i = 0; i + 1 < x.numel(); i += 2) {
          const float lo = std::min(px[i], px[i + 1]), hi = std::max(px[i], px[i + 1]);
          GridParams want = GridFromRange(lo, hi, o);
          Grid got = GridFromRange(lo, hi, bits, sym, min_zero, true);
          ASSERT_EQ(got.scale, want.scale);
          ASSERT_EQ(got.zero, want.zero);
        }
      }
    }
  }
}

#if defined(PTQ_HAVE_CUDA)
TEST(QuantDequantCudaTest, MatchesReferenceOnRandomAndEdgeShapes) {
  if (std::string why = ptq::testing::CudaUnavailableReason(); !why.empty()) GTEST_SKIP() << why;
  uint64_t seed = 20;
  struct Shape { int64_t rows, cols, group; int bits; bool act_order; };
  for (Shape s : {Shape{1, 1, 0, 4, false}, Shape{3, 33, 32, 3, false}, Shape{64, 128, 128, 2, true},
                  Shape{257, 4096, 128, 4, false}, Shape{1000, 700, 64, 8, true}}) {
    SCOPED_TRACE(::testing::Message() << s.rows << "x" << s.cols << " g" << s.group);
    Problem p = MakeProblem(s.rows, s.cols, s.group, s.bits, s.act_order, seed++);
    const int64_t n = s.rows * s.cols;
    std::vector<uint8_t> codes(n);
    std::vector<float> deq(n);
    ASSERT_TRUE(QuantDequantRef(ArgsFor(p, codes.data(), deq.data())).ok());
    std::vector<float> w(p.w.data_ptr<float>(), p.w.data_ptr<float>() + n);
    std::vector<float> sc(p.scales.data_ptr<float>(), p.scales.data_ptr<float>() + p.scales.numel());
    std::vector<float> ze(p.zeros.data_ptr<float>(), p.zeros.data_ptr<float>() + p.zeros.numel());
    std::vector<int32_t> gi = p.g_idx.defined()
        ? std::vector<int32_t>(p.g_idx.data_ptr<int32_t>(), p.g_idx.data_ptr<int32_t>() + s.cols)
        : std::vector<int32_t>();
    ptq::testing::DeviceBuffer<float> dw(w), ds(sc), dz(ze), dd{std::vector<float>(n)};
    ptq::testing::DeviceBuffer<int32_t> dg(gi);
    ptq::testing::DeviceBuffer<uint8_t> dc{std::vector<uint8_t>(n)};
    QuantDequantArgs a = ArgsFor(p, dc.get(), dd.get());
    a.w = dw.get();
    a.scales = ds.get();
    a.zeros = dz.get();
    a.g_idx = p.g_idx.defined() ? dg.get() : nullptr;
    ptq::testing::TestStream stream;
    ASSERT_TRUE(QuantDequantCuda(a, stream.get()).ok());
    ASSERT_EQ(stream.Sync(), cudaSuccess);
    EXPECT_EQ(dc.Host(), codes);
    std::vector<float> got = dd.Host();
    float worst = 0;
    for (int64_t i = 0; i < n; ++i) worst = std::max(worst, std::fabs(got[i] - deq[i]));
    EXPECT_LE(worst, kCudaTol);
  }
}
#else
TEST(QuantDequantCudaTest, MatchesReferenceOnRandomAndEdgeShapes) {
  GTEST_SKIP() << ptq::testing::CudaUnavailableReason();
}
#endif

}  // namespace
}  // namespace ptq::kernels
