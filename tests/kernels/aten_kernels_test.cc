// The kernels' ATen entries on CPU tensors (where they run the references): the same results as
// the references on raw pointers and as the quantizer's own code, views and strides passed through
// correctly, and bad arguments refused before any pointer is used. The launchers' status contract
// (bad arguments, a launch that cannot run) where CUDA was built. CUDA tensors: tests/gpu/.
#include "kernels/aten_kernels.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "common/gptq_format.h"
#include "core/quant/gptq_quantizer.h"
#include "kernels/gptq_block.h"
#include "kernels/gptq_pack.h"
#include "kernels/hessian_accumulate.h"
#include "kernels/quant_dequant.h"
#include "tests/kernels/cuda_test_util.h"

namespace ptq::kernels {
namespace {

// The entries hand the references the same numbers in the same order: equal bits.
constexpr double kSameOrderTol = 0.0;
// Several lazy blocks: the entry's update GEMM and GptqQuantizeWithFactor's reach BLAS with
// different operand layouts, so a code may flip at a rounding boundary (as in gptq_block_test).
constexpr double kMultiBlockMaxCodeMismatch = 2e-3;

at::Tensor RandomHessian(int64_t cols, int64_t tokens, uint64_t seed) {
  at::manual_seed(seed);
  at::Tensor mix = at::randn({cols, cols}, at::kDouble) / std::sqrt(double(cols)) +
                   at::eye(cols, at::kDouble);
  at::Tensor x = at::matmul(at::randn({tokens, cols}, at::kDouble), mix);
  return at::matmul(x.t(), x) * (2.0 / tokens);
}

TEST(AtenKernelsTest, UnavailableReasonAgreesWithLibtorch) {
  const std::string why = CudaKernelsUnavailableReason();
#if defined(PTQ_HAVE_CUDA) && defined(PTQ_TORCH_CUDA)
  EXPECT_EQ(why.empty(), at::hasCUDA()) << why;
#else
  EXPECT_FALSE(why.empty());
#endif
}

TEST(AtenKernelsTest, HessianAccumulateEqualsReferenceOnAStridedBatch) {
  at::manual_seed(1);
  // [dim, batch, tokens] transposed to [batch, tokens, dim]: not contiguous, three dims.
  const at::Tensor x = at::randn({9, 2, 37}, at::kFloat).permute({1, 2, 0});
  at::Tensor sum = at::full({9, 9}, 0.25, at::kDouble);
  ASSERT_TRUE(HessianAccumulateAten(x, sum).ok());
  const at::Tensor flat = x.reshape({-1, 9}).contiguous();
  at::Tensor want = at::full({9, 9}, 0.25, at::kDouble);
  ASSERT_TRUE(HessianAccumulateRef({flat.size(0), 9, flat.data_ptr<float>(), want.data_ptr<double>()}).ok());
  EXPECT_LE((sum - want).abs().max().item<double>(), kSameOrderTol);
  // bfloat16 input is converted first, as HessianAccumulator::Add does.
  at::Tensor from_bf16 = at::zeros({9, 9}, at::kDouble);
  ASSERT_TRUE(HessianAccumulateAten(x.to(at::kBFloat16), from_bf16).ok());
  at::Tensor want_bf16 = at::zeros({9, 9}, at::kDouble);
  ASSERT_TRUE(HessianAccumulateAten(x.to(at::kBFloat16).to(at::kFloat), want_bf16).ok());
  EXPECT_TRUE(at::equal(from_bf16, want_bf16));
}

TEST(AtenKernelsTest, HessianAccumulateRefusesBadTensors) {
  const at::Tensor x = at::randn({4, 3});
  at::Tensor f32 = at::zeros({3, 3}, at::kFloat);
  EXPECT_EQ(HessianAccumulateAten(x, f32).code(), absl::StatusCode::kInvalidArgument);
  at::Tensor wrong = at::zeros({4, 4}, at::kDouble);
  EXPECT_EQ(HessianAccumulateAten(x, wrong).code(), absl::StatusCode::kInvalidArgument);
  at::Tensor strided = at::zeros({3, 6}, at::kDouble).narrow(1, 0, 3);
  EXPECT_EQ(HessianAccumulateAten(x, strided).code(), absl::StatusCode::kInvalidArgument);
  at::Tensor sum = at::zeros({3, 3}, at::kDouble);
  EXPECT_EQ(HessianAccumulateAten(at::ones({4, 3}, at::kInt), sum).code(),
            absl::StatusCode::kInvalidArgument);
  // Neither CPU nor CUDA: refused before any data pointer is taken.
  const at::Tensor meta = at::empty({4, 3}, at::TensorOptions().device(at::kMeta));
  at::Tensor meta_sum = at::empty({3, 3}, at::TensorOptions().device(at::kMeta).dtype(at::kDouble));
  EXPECT_EQ(HessianAccumulateAten(meta, meta_sum).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(HessianAccumulateAten(meta, sum).code(), absl::StatusCode::kInvalidArgument);
}

TEST(AtenKernelsTest, GptqBlockOnViewsEqualsReferenceOnPointers) {
  const int64_t rows = 21, count = 48, ld = 70, group = 16;
  const at::Tensor u =
      InverseCholeskyUpper(RandomHessian(count, 200, 2), 0.01, "test")->to(at::kFloat).contiguous();
  at::manual_seed(3);
  const at::Tensor w0 = at::randn({rows, ld}, at::kFloat);
  // The entry on views of wider tensors (leading dimension 70, offset 5).
  at::Tensor w = w0.clone();
  at::Tensor q = at::zeros({rows, ld}), err = at::zeros({rows, ld});
  at::Tensor codes = at::zeros({rows, ld}, at::kByte);
  at::Tensor scales = at::zeros({rows, 7}), zeros = at::zeros({rows, 7});
  GptqBlockTensors t{w.narrow(1, 5, count), u, q.narrow(1, 5, count), codes.narrow(1, 5, count),
                     err.narrow(1, 5, count), scales.narrow(1, 1, 3), zeros.narrow(1, 1, 3)};
  GptqBlockSettings s;
  s.group_cols = group;
  s.bits = 3;
  s.min_zero = 1;
  const absl::Status st = GptqBlockAten(t, s);
  ASSERT_TRUE(st.ok()) << st;
  // The reference on compact copies.
  at::Tensor rw = w0.narrow(1, 5, count).contiguous();
  at::Tensor rq = at::zeros({rows, count}), re = at::zeros({rows, count});
  at::Tensor rc = at::zeros({rows, count}, at::kByte);
  at::Tensor rs = at::zeros({rows, 3}), rz = at::zeros({rows, 3});
  at::Tensor uc = u.contiguous();
  GptqBlockArgs a;
  a.rows = rows;
  a.count = count;
  a.w = rw.data_ptr<float>();
  a.ldw = count;
  a.u = uc.data_ptr<float>();
  a.ldu = count;
  a.q = rq.data_ptr<float>();
  a.codes = rc.data_ptr<uint8_t>();
  a.ldq = count;
  a.err = re.data_ptr<float>();
  a.lde = count;
  a.scales = rs.data_ptr<float>();
  a.zeros = rz.data_ptr<float>();
  a.ldg = 3;
  a.group_cols = group;
  a.bits = 3;
  a.min_zero = 1;
  ASSERT_TRUE(GptqBlockRef(a).ok());
  EXPECT_TRUE(at::equal(codes.narrow(1, 5, count), rc));
  EXPECT_TRUE(at::equal(q.narrow(1, 5, count), rq));
  EXPECT_TRUE(at::equal(err.narrow(1, 5, count), re));
  EXPECT_TRUE(at::equal(w.narrow(1, 5, count), rw));
  EXPECT_TRUE(at::equal(scales.narrow(1, 1, 3), rs));
  EXPECT_TRUE(at::equal(zeros.narrow(1, 1, 3), rz));
  EXPECT_GE(rz.min().item<float>(), 1.0f);  // min_zero reached the grids
  // Nothing outside the views was written.
  EXPECT_EQ(q.narrow(1, 0, 5).abs().sum().item<float>(), 0.0f);
  EXPECT_EQ(scales.narrow(1, 4, 3).abs().sum().item<float>(), 0.0f);
  EXPECT_TRUE(at::equal(w.narrow(1, 5 + count, ld - 5 - count), w0.narrow(1, 5 + count, ld - 5 - count)));
}

TEST(AtenKernelsTest, GptqBlockRefusesInconsistentTensors) {
  const int64_t rows = 4, count = 8;
  auto make = [&] {
    return GptqBlockTensors{at::randn({rows, count}), at::eye(count), at::zeros({rows, count}),
                            at::zeros({rows, count}, at::kByte), at::zeros({rows, count}),
                            at::zeros({rows, 1}), at::zeros({rows, 1})};
  };
  GptqBlockSettings s;
  const absl::Status ok = GptqBlockAten(make(), s);
  ASSERT_TRUE(ok.ok()) << ok;
  GptqBlockTensors t = make();
  t.codes = at::zeros({rows, 2 * count}, at::kByte).narrow(1, 0, count);  // another row stride than q
  EXPECT_EQ(GptqBlockAten(t, s).code(), absl::StatusCode::kInvalidArgument);
  t = make();
  t.u = at::eye(count + 1);
  EXPECT_EQ(GptqBlockAten(t, s).code(), absl::StatusCode::kInvalidArgument);
  t = make();
  t.w = at::randn({count, rows}).t();  // columns not contiguous
  EXPECT_EQ(GptqBlockAten(t, s).code(), absl::StatusCode::kInvalidArgument);
  t = make();
  t.err = at::zeros({rows, count}, at::kDouble);
  EXPECT_EQ(GptqBlockAten(t, s).code(), absl::StatusCode::kInvalidArgument);
  t = make();
  s.group_cols = 4;  // two groups per row, one grid given
  EXPECT_EQ(GptqBlockAten(t, s).code(), absl::StatusCode::kInvalidArgument);
}

TEST(AtenKernelsTest, ColumnLoopMatchesGptqQuantizeWithGroups) {
  const int64_t rows = 40, cols = 320, group = 64;
  const at::Tensor h = RandomHessian(cols, 800, 5);
  at::manual_seed(6);
  const at::Tensor w = at::randn({rows, cols}, at::kFloat);
  GptqOptions o;
  o.grid.bits = 3;
  o.grid.min_zero = 1;
  o.group_size = group;
  o.block_size = 128;
  auto expected = GptqQuantize(w, h, o, "loop");
  ASSERT_TRUE(expected.ok()) << expected.status();
  auto factor = PrepareGptq(h, o, "loop");
  ASSERT_TRUE(factor.ok()) << factor.status();
  GptqBlockSettings s;
  s.group_cols = group;
  s.bits = 3;
  s.min_zero = 1;
  at::Tensor work = w.clone();
  auto got = GptqColumnLoopAten(work, factor->u, 128, s);
  ASSERT_TRUE(got.ok()) << got.status();
  const double mismatch = got->codes.ne(expected->codes).to(at::kDouble).mean().item<double>();
  EXPECT_LE(mismatch, kMultiBlockMaxCodeMismatch);
  // The first block sees no lazy update: its codes, grids and weights are GptqQuantize's bits.
  EXPECT_TRUE(at::equal(got->codes.narrow(1, 0, 128), expected->codes.narrow(1, 0, 128)));
  EXPECT_TRUE(at::equal(got->scales.narrow(1, 0, 2), expected->scales.narrow(1, 0, 2)));
  EXPECT_TRUE(at::equal(got->q.narrow(1, 0, 128), expected->weight.narrow(1, 0, 128)));
}

TEST(AtenKernelsTest, ColumnLoopWithFixedRowGridsMatchesPerChannelGptq) {
  const int64_t rows = 33, cols = 200;
  const at::Tensor h = RandomHessian(cols, 500, 7);
  at::manual_seed(8);
  const at::Tensor w = at::randn({rows, cols}, at::kFloat);
  GptqOptions o;
  o.grid.bits = 4;
  o.group_size = -1;  // one grid per row, fitted before the loop
  o.block_size = 128;
  auto expected = GptqQuantize(w, h, o, "rows");
  ASSERT_TRUE(expected.ok()) << expected.status();
  auto factor = PrepareGptq(h, o, "rows");
  ASSERT_TRUE(factor.ok()) << factor.status();
  GptqBlockSettings s;
  s.group_cols = 0;
  s.fit_grids = false;
  at::Tensor work = w.clone();
  auto got = GptqColumnLoopAten(work, factor->u, 128, s, expected->scales, expected->zeros);
  ASSERT_TRUE(got.ok()) << got.status();
  const double mismatch = got->codes.ne(expected->codes).to(at::kDouble).mean().item<double>();
  EXPECT_LE(mismatch, kMultiBlockMaxCodeMismatch);
  EXPECT_TRUE(at::equal(got->codes.narrow(1, 0, 128), expected->codes.narrow(1, 0, 128)));
}

TEST(AtenKernelsTest, ColumnLoopRefusesBlocksAcrossGroupsAndUnfittableGrids) {
  const at::Tensor w = at::randn({4, 256});
  const at::Tensor u = at::eye(256);
  GptqBlockSettings s;
  s.group_cols = 96;  // 128-column blocks would cut groups
  EXPECT_EQ(GptqColumnLoopAten(w.clone(), u, 128, s).status().code(), absl::StatusCode::kInvalidArgument);
  s.group_cols = 0;  // fitting per-row grids inside the loop is not GPTQ's rule
  EXPECT_EQ(GptqColumnLoopAten(w.clone(), u, 128, s).status().code(), absl::StatusCode::kInvalidArgument);
  s.fit_grids = false;  // ... and fixed grids must be given
  EXPECT_EQ(GptqColumnLoopAten(w.clone(), u, 128, s).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GptqColumnLoopAten(w.clone(), u, 300, s, at::ones({4, 1}), at::zeros({4, 1})).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(AtenKernelsTest, QuantDequantEqualsAtenFormula) {
  at::manual_seed(9);
  const int64_t rows = 11, cols = 96, group = 32;
  const at::Tensor w = at::randn({cols, rows}).t();  // not contiguous
  const at::Tensor scales = at::rand({rows, 3}) * 0.5f + 0.05f;
  const at::Tensor zeros = at::randint(0, 16, {rows, 3}, at::kFloat);
  const at::Tensor g_idx = at::div(at::randperm(cols, at::kLong), group, "floor").to(at::kInt);
  for (bool act_order : {false, true}) {
    auto got = QuantDequantAten(w, scales, zeros, act_order ? g_idx : at::Tensor(), group, 4);
    ASSERT_TRUE(got.ok()) << got.status();
    const at::Tensor gi = act_order ? g_idx.to(at::kLong) : at::div(at::arange(cols, at::kLong), group, "floor");
    const at::Tensor s = scales.index_select(1, gi), z = zeros.index_select(1, gi);
    const at::Tensor q = at::clamp(at::round(w / s) + z, 0, 15);
    EXPECT_TRUE(at::equal(got->codes, q.to(at::kByte))) << "act_order " << act_order;
    EXPECT_LE((got->deq - s * (q - z)).abs().max().item<float>(), kSameOrderTol);
  }
}

TEST(AtenKernelsTest, QuantDequantRefusesOutOfRangeGroups) {
  const at::Tensor w = at::randn({2, 64});
  const at::Tensor s = at::ones({2, 2}), z = at::zeros({2, 2});
  at::Tensor g_idx = at::zeros({64}, at::kInt);
  g_idx[63] = 2;
  EXPECT_EQ(QuantDequantAten(w, s, z, g_idx, 32, 4).status().code(), absl::StatusCode::kInvalidArgument);
  g_idx[63] = -1;
  EXPECT_EQ(QuantDequantAten(w, s, z, g_idx, 32, 4).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(QuantDequantAten(w, s, z, at::zeros({64}, at::kLong), 32, 4).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(QuantDequantAten(w, at::ones({2, 1}), at::zeros({2, 1}), at::Tensor(), 32, 4).status().code(),
            absl::StatusCode::kInvalidArgument);  // two column groups, one grid
}

TEST(AtenKernelsTest, GptqPackEqualsTheCheckpointWritersPacking) {
  at::manual_seed(10);
  for (int bits : {2, 3, 4, 8}) {
    const int64_t k = 96, n = 5;
    const at::Tensor codes = at::randint(0, 1 << bits, {n, k}, at::kByte).t();  // [K, N], strided
    auto got = GptqPackAten(codes, bits);
    ASSERT_TRUE(got.ok()) << got.status();
    const at::Tensor c = codes.contiguous();
    auto want = gptq::PackRows(std::vector<uint8_t>(c.data_ptr<uint8_t>(), c.data_ptr<uint8_t>() + k * n),
                               k, n, bits);
    ASSERT_TRUE(want.ok());
    ASSERT_EQ(got->sizes(), (std::vector<int64_t>{k * bits / 32, n}));
    EXPECT_EQ(std::vector<int32_t>(got->data_ptr<int32_t>(), got->data_ptr<int32_t>() + got->numel()),
              *want)
        << bits << " bits";
  }
}

TEST(AtenKernelsTest, GptqPackRefusesCodesThatDoNotFit) {
  EXPECT_EQ(GptqPackAten(at::full({32, 2}, 16, at::kByte), 4).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GptqPackAten(at::zeros({32, 2}, at::kByte), 5).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GptqPackAten(at::zeros({4, 2}, at::kByte), 4).status().code(),
            absl::StatusCode::kInvalidArgument);  // 16 bits: not a whole word
  EXPECT_EQ(GptqPackAten(at::zeros({32, 2}, at::kInt), 4).status().code(),
            absl::StatusCode::kInvalidArgument);
}

#if defined(PTQ_HAVE_CUDA)
// The launchers check their arguments before touching the device, so this runs without a GPU.
TEST(CudaLaunchersTest, RefuseBadArgumentsAsInvalidArgument) {
  GptqBlockArgs block;  // null pointers
  block.rows = 4;
  block.count = 8;
  EXPECT_EQ(GptqBlockCuda(block, nullptr).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GptqPackCuda(GptqPackArgs{4, 1, nullptr, 4, nullptr}, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(HessianAccumulateCuda(HessianAccumulateArgs{-1, 3, nullptr, nullptr}, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  QuantDequantArgs qd;
  qd.rows = qd.cols = 2;
  EXPECT_EQ(QuantDequantCuda(qd, nullptr).code(), absl::StatusCode::kInvalidArgument);
}

// Without a usable device a launch fails; the launcher must say so rather than report success.
TEST(CudaLaunchersTest, ALaunchThatCannotRunIsAnError) {
  if (ptq::testing::CudaUnavailableReason().empty()) {
    GTEST_SKIP() << "a CUDA device is present, so launches succeed (tests/gpu covers them)";
  }
  std::vector<float> x(4 * 3, 1.0f);
  std::vector<double> sum(9, 0.0);
  const absl::Status s = HessianAccumulateCuda(HessianAccumulateArgs{4, 3, x.data(), sum.data()}, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal) << s;
  EXPECT_NE(s.message().find("HessianAccumulateCuda launch failed"), std::string::npos) << s;
}
#endif

}  // namespace
}  // namespace ptq::kernels
