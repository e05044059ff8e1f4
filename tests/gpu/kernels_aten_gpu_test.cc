// Each kernel's ATen entry on CUDA tensors against the same computation written with ATen ops on
// the same device (and, where the kernel promises it, against the entry on the CPU bit for bit).
// The ATen versions divide by tensors, never by a scalar (ATen's CUDA division by a scalar
// multiplies by its reciprocal), and multiply and subtract in separate ops, so they round as the
// kernels (built with --fmad=false) do.
#include "kernels/aten_kernels.h"

#include "kernels/grid_fit.h"
#include "tests/gpu/gpu_test_util.h"

namespace ptq::kernels {
namespace {

using gpu_testing::Cuda;
using gpu_testing::CudaDevice;
using gpu_testing::FactorU;

// Fixed-order float32 chunks summed in float64, against a float64 product (hessian_accumulate_test).
constexpr double kFixedOrderVsFloat64RelTol = 1e-5;
// Same operations in the same order, IEEE division, no FMA: equal bits; a tiny fraction of
// differing elements is tolerated for the block (a flipped code changes the rest of its row).
constexpr double kBlockMaxMismatch = 1e-3;
// The whole loop's lazy update is cuBLAS on CUDA and the CPU BLAS on the CPU (aten_kernels_test).
constexpr double kLoopMaxCodeMismatch = 2e-3;

TEST(KernelsAtenGpuTest, HessianAccumulateMatchesFloat64AtenAndTheCpuBitForBit) {
  PTQ_SKIP_WITHOUT_GPU();
  for (auto [tokens, dim] : {std::pair<int64_t, int64_t>{2048, 512}, {77, 200}, {1, 65}}) {
    SCOPED_TRACE(::testing::Message() << tokens << " tokens, dim " << dim);
    at::manual_seed(tokens + dim);
    const at::Tensor x = at::randn({tokens, dim}) + 0.3;
    const at::Tensor start = at::rand({dim, dim}, at::kDouble);
    at::Tensor on_cuda = Cuda(start);
    ASSERT_TRUE(HessianAccumulateAten(Cuda(x), on_cuda).ok());
    const at::Tensor xd = Cuda(x).to(at::kDouble);
    const at::Tensor aten = Cuda(start) + at::matmul(xd.t(), xd);
    EXPECT_LE(gpu_testing::MaxRelativeDiff(on_cuda, aten), kFixedOrderVsFloat64RelTol);
    at::Tensor on_cpu = start.clone();
    ASSERT_TRUE(HessianAccumulateAten(x, on_cpu).ok());
    EXPECT_TRUE(at::equal(on_cuda.cpu(), on_cpu));
  }
}

TEST(KernelsAtenGpuTest, EntriesRefuseTensorsOnTwoDevices) {
  PTQ_SKIP_WITHOUT_GPU();
  if (gpu_testing::CpuStandsIn()) GTEST_SKIP() << "needs a real second device kind";
  at::Tensor sum = at::zeros({8, 8}, at::kDouble);
  EXPECT_EQ(HessianAccumulateAten(Cuda(at::randn({4, 8})), sum).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(QuantDequantAten(Cuda(at::randn({2, 8})), at::ones({2, 1}), at::zeros({2, 1}), at::Tensor(), 0, 4)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

struct BlockOut {
  at::Tensor w, q, codes, err, scales, zeros;
};

// GPTQ's column loop inside one block in ATen ops (GptqBlockRef's arithmetic, grid_fit.h's grid).
BlockOut AtenBlock(at::Tensor w, const at::Tensor& u, int64_t gc, int bits, bool sym, int min_zero) {
  const int64_t rows = w.size(0), count = w.size(1);
  const float maxq = static_cast<float>((1 << bits) - 1);
  const int64_t groups = (count + gc - 1) / gc;
  BlockOut o;
  o.q = at::empty_like(w);
  o.codes = at::empty({rows, count}, w.options().dtype(at::kByte));
  o.err = at::empty_like(w);
  o.scales = at::empty({rows, groups}, w.options());
  o.zeros = at::empty({rows, groups}, w.options());
  at::Tensor scale, zero;
  for (int64_t i = 0; i < count; ++i) {
    if (i % gc == 0) {
      const at::Tensor g = w.narrow(1, i, std::min(gc, count - i));
      at::Tensor lo = at::clamp_max(std::get<0>(g.min(1)), 0.0);
      at::Tensor hi = at::clamp_min(std::get<0>(g.max(1)), 0.0);
      if (sym) {
        hi = at::maximum(-lo, hi);
        lo = at::where(lo < 0, -hi, lo);
      }
      const at::Tensor empty = (lo == 0) & (hi == 0);
      lo = at::where(empty, at::full_like(lo, -1.0), lo);
      hi = at::where(empty, at::full_like(hi, 1.0), hi);
      scale = at::div(hi - lo, at::full_like(hi, maxq)).to(at::kHalf).to(at::kFloat);
      scale = at::where(scale > 0, scale, at::full_like(scale, kMinFp16Scale));
      zero = sym ? at::full_like(scale, static_cast<float>((1 << bits) / 2))
                 : at::clamp_min(at::round(at::div(-lo, scale)), static_cast<double>(min_zero));
      o.scales.select(1, i / gc).copy_(scale);
      o.zeros.select(1, i / gc).copy_(zero);
    }
    const at::Tensor wi = w.select(1, i);
    const at::Tensor code = at::clamp(at::round(at::div(wi, scale)) + zero, 0.0, maxq);
    const at::Tensor deq = scale * (code - zero);
    const at::Tensor e = at::div(wi - deq, u[i][i].expand_as(wi));
    o.q.select(1, i).copy_(deq);
    o.codes.select(1, i).copy_(code.to(at::kByte));
    o.err.select(1, i).copy_(e);
    if (i + 1 < count) {
      at::Tensor later = w.narrow(1, i + 1, count - i - 1);
      later.sub_(e.unsqueeze(1) * u[i].narrow(0, i + 1, count - i - 1).unsqueeze(0));
    }
  }
  o.w = w;
  return o;
}

TEST(KernelsAtenGpuTest, GptqBlockMatchesAtenColumnLoop) {
  PTQ_SKIP_WITHOUT_GPU();
  struct Case { int64_t rows, count, gc; int bits; bool sym; int min_zero; };
  uint64_t seed = 40;
  for (Case c : {Case{700, 128, 128, 4, false, 1}, Case{65, 256, 32, 3, false, 0},
                 Case{33, 96, 96, 2, true, 0}, Case{4096, 128, 128, 2, false, 1}}) {
    SCOPED_TRACE(::testing::Message() << c.rows << "x" << c.count << " g" << c.gc << " w" << c.bits);
    const at::Tensor u = Cuda(
        FactorU(gpu_testing::RandomHessian(c.count, 3 * c.count, seed++)));
    at::manual_seed(seed++);
    const at::Tensor w0 = Cuda(at::randn({c.rows, c.count}));
    const int64_t groups = (c.count + c.gc - 1) / c.gc;
    const auto f32 = at::TensorOptions().device(CudaDevice());
    GptqBlockTensors t{w0.clone(),
                       u,
                       at::empty({c.rows, c.count}, f32),
                       at::empty({c.rows, c.count}, f32.dtype(at::kByte)),
                       at::empty({c.rows, c.count}, f32),
                       at::empty({c.rows, groups}, f32),
                       at::empty({c.rows, groups}, f32)};
    GptqBlockSettings s;
    s.group_cols = c.gc;
    s.bits = c.bits;
    s.sym = c.sym;
    s.min_zero = c.min_zero;
    const absl::Status st = GptqBlockAten(t, s);
    ASSERT_TRUE(st.ok()) << st;
    const BlockOut want = AtenBlock(w0.clone(), u, c.gc, c.bits, c.sym, c.min_zero);
    EXPECT_LE(gpu_testing::MismatchFraction(t.codes, want.codes), kBlockMaxMismatch);
    EXPECT_LE(gpu_testing::MismatchFraction(t.q, want.q), kBlockMaxMismatch);
    EXPECT_LE(gpu_testing::MismatchFraction(t.err, want.err), kBlockMaxMismatch);
    EXPECT_LE(gpu_testing::MismatchFraction(t.w, want.w), kBlockMaxMismatch);
    EXPECT_LE(gpu_testing::MismatchFraction(t.scales, want.scales), kBlockMaxMismatch);
    EXPECT_LE(gpu_testing::MismatchFraction(t.zeros, want.zeros), kBlockMaxMismatch);
  }
}

TEST(KernelsAtenGpuTest, GptqColumnLoopOnCudaMatchesTheCpu) {
  PTQ_SKIP_WITHOUT_GPU();
  const int64_t rows = 512, cols = 1024;
  const at::Tensor u = FactorU(gpu_testing::RandomHessian(cols, 3 * cols, 50));
  at::manual_seed(51);
  const at::Tensor w = at::randn({rows, cols}) * 0.02;
  GptqBlockSettings s;
  s.group_cols = 128;
  s.bits = 4;
  s.min_zero = 1;
  at::Tensor work_cpu = w.clone(), work_cuda = Cuda(w);
  auto cpu = GptqColumnLoopAten(work_cpu, u, 128, s);
  auto gpu = GptqColumnLoopAten(work_cuda, Cuda(u), 128, s);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  EXPECT_TRUE(gpu->codes.device() == CudaDevice());
  EXPECT_LE(gpu_testing::MismatchFraction(gpu->codes, cpu->codes), kLoopMaxCodeMismatch);
  // The first block sees no lazy update: the same bits.
  EXPECT_LE(gpu_testing::MismatchFraction(gpu->codes.narrow(1, 0, 128), cpu->codes.narrow(1, 0, 128)),
            kBlockMaxMismatch);
}

TEST(KernelsAtenGpuTest, QuantDequantMatchesAtenFormula) {
  PTQ_SKIP_WITHOUT_GPU();
  at::manual_seed(60);
  for (bool act_order : {false, true}) {
    const int64_t rows = 1000, cols = 4096, group = 128, groups = cols / group;
    const at::Tensor w = Cuda(at::randn({rows, cols}));
    const at::Tensor scales = Cuda(at::rand({rows, groups}) * 0.5 + 0.05);
    const at::Tensor zeros = Cuda(at::randint(0, 16, {rows, groups}, at::kFloat));
    const at::Tensor g_idx =
        act_order ? Cuda(at::div(at::randperm(cols, at::kLong), group, "floor").to(at::kInt)) : at::Tensor();
    auto got = QuantDequantAten(w, scales, zeros, g_idx, group, 4);
    ASSERT_TRUE(got.ok()) << got.status();
    const at::Tensor gi = act_order ? g_idx.to(at::kLong)
                                    : at::div(at::arange(cols, w.options().dtype(at::kLong)), group, "floor");
    const at::Tensor s = scales.index_select(1, gi), z = zeros.index_select(1, gi);
    const at::Tensor q = at::clamp(at::round(at::div(w, s)) + z, 0, 15);
    EXPECT_TRUE(at::equal(got->codes.cpu(), q.to(at::kByte).cpu())) << "act_order " << act_order;
    EXPECT_TRUE(at::equal(got->deq.cpu(), (s * (q - z)).cpu())) << "act_order " << act_order;
  }
}

// docs/formats.md's bit stream in ATen ops: code k of a column at stream bits [k b, k b + b).
at::Tensor AtenPack(const at::Tensor& codes, int bits) {
  const int64_t k = codes.size(0), n = codes.size(1);
  const auto i64 = codes.options().dtype(at::kLong);
  const at::Tensor pos = at::arange(k, i64) * bits;
  const at::Tensor word = at::div(pos, 32, "floor"), off = at::remainder(pos, 32);
  const at::Tensor c = codes.to(at::kLong);
  at::Tensor words = at::zeros({k * bits / 32 + 1, n}, i64);  // one spare word for the spill
  words.index_add_(0, word, at::bitwise_and(at::bitwise_left_shift(c, off.unsqueeze(1)), static_cast<int64_t>(0xffffffff)));
  words.index_add_(0, word + 1, at::bitwise_right_shift(c, (32 - off).unsqueeze(1)));
  words = words.narrow(0, 0, k * bits / 32);
  const int64_t two31 = int64_t{1} << 31, two32 = int64_t{1} << 32;
  return at::where(words >= two31, words - two32, words).to(at::kInt);  // as int32 bits
}

TEST(KernelsAtenGpuTest, GptqPackMatchesAtenBitStreamAndTheCpu) {
  PTQ_SKIP_WITHOUT_GPU();
  at::manual_seed(70);
  for (int bits : {2, 3, 4, 8}) {
    SCOPED_TRACE(::testing::Message() << bits << " bits");
    const at::Tensor codes = at::randint(0, 1 << bits, {4096, 257}, at::kByte);
    auto gpu = GptqPackAten(Cuda(codes), bits);
    ASSERT_TRUE(gpu.ok()) << gpu.status();
    EXPECT_TRUE(at::equal(gpu->cpu(), AtenPack(Cuda(codes), bits).cpu()));
    auto cpu = GptqPackAten(codes, bits);
    ASSERT_TRUE(cpu.ok()) << cpu.status();
    EXPECT_TRUE(at::equal(gpu->cpu(), *cpu));
  }
}

}  // namespace
}  // namespace ptq::kernels
