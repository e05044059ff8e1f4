// The fused GPTQ block: the CPU reference against worker/gptq_quantizer's GptqQuantize (one block,
// then several blocks with the lazy update done here), against the identity W - Q = E triu(U) that
// the column loop implies, and the CUDA kernel against the reference where a GPU exists.
#include "kernels/gptq_block.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "tests/kernels/cuda_test_util.h"
#include "core/quant/gptq_quantizer.h"

namespace ptq::kernels {
namespace {

// Reference and worker code run the same float operations in the same order: bit equality.
constexpr float kSameOrderTol = 0.0f;
// Several blocks: the lazy-update GEMM here and in GptqQuantize may round differently (different
// operand layouts reach BLAS), and a code can flip at a rounding boundary.
constexpr double kMultiBlockMaxCodeMismatch = 2e-3;
// W - Q = E triu(U), evaluated in float64 from float32 data.
constexpr double kIdentityRelTol = 1e-5;
// CUDA against the reference: same order, no FMA, IEEE division, so equal bits are expected; a
// tiny fraction of differing elements is tolerated (a flipped code changes the rest of its row).
constexpr double kCudaMaxMismatchFraction = 1e-3;
constexpr float kCudaAbsTol = 1e-6f;

at::Tensor RandomHessian(int64_t cols, int64_t tokens, uint64_t seed) {
  at::manual_seed(seed);
  at::Tensor mix = at::randn({cols, cols}, at::kDouble) / std::sqrt(double(cols)) +
                   at::eye(cols, at::kDouble);
  at::Tensor x = at::matmul(at::randn({tokens, cols}, at::kDouble), mix);
  return at::matmul(x.t(), x) * (2.0 / tokens);
}

struct BlockResult {
  at::Tensor w, q, codes, err, scales, zeros;
};

// Runs GptqBlockRef on the columns [b0, b0 + count) of w (in place) with the matching part of u.
BlockResult RunRef(at::Tensor w, const at::Tensor& u, int64_t b0, int64_t count, int64_t group_cols,
                   int bits, bool sym) {
  const int64_t rows = w.size(0);
  const int64_t groups = group_cols > 0 ? (count + group_cols - 1) / group_cols : 1;
  BlockResult r;
  r.w = w.narrow(1, b0, count).contiguous();
  r.q = at::zeros({rows, count}, at::kFloat);
  r.codes = at::zeros({rows, count}, at::kByte);
  r.err = at::zeros({rows, count}, at::kFloat);
  r.scales = at::zeros({rows, groups}, at::kFloat);
  r.zeros = at::zeros({rows, groups}, at::kFloat);
  GptqBlockArgs a;
  a.rows = rows;
  a.count = count;
  a.w = r.w.data_ptr<float>();
  a.ldw = count;
  a.u = u.data_ptr<float>() + b0 * u.size(1) + b0;
  a.ldu = u.size(1);
  a.q = r.q.data_ptr<float>();
  a.codes = r.codes.data_ptr<uint8_t>();
  a.ldq = count;
  a.err = r.err.data_ptr<float>();
  a.lde = count;
  a.scales = r.scales.data_ptr<float>();
  a.zeros = r.zeros.data_ptr<float>();
  a.ldg = groups;
  a.group_cols = group_cols;
  a.bits = bits;
  a.sym = sym;
  absl::Status s = GptqBlockRef(a);
  EXPECT_TRUE(s.ok()) << s;
  return r;
}

at::Tensor FactorU(const at::Tensor& h) {
  auto u = InverseCholeskyUpper(h, 0.01, "test");
  EXPECT_TRUE(u.ok()) << u.status();
  return u->to(at::kFloat).contiguous();
}

TEST(GptqBlockRefTest, OneBlockEqualsGptqQuantize) {
  const int64_t rows = 24, cols = 128;
  at::Tensor h = RandomHessian(cols, 400, 3);
  at::Tensor u = FactorU(h);
  at::manual_seed(4);
  at::Tensor w = at::randn({rows, cols}, at::kFloat);
  for (int bits : {2, 3, 4, 8}) {
    for (bool sym : {false, true}) {
      for (int64_t group : {int64_t{-1}, int64_t{32}}) {
        GptqOptions o;
        o.grid.bits = bits;
        o.grid.sym = sym;
        o.group_size = group;
        o.block_size = 128;
        auto expected = GptqQuantize(w, h, o, "block");
        ASSERT_TRUE(expected.ok()) << expected.status();
        BlockResult got = RunRef(w.clone(), u, 0, cols, group > 0 ? group : 0, bits, sym);
        SCOPED_TRACE(::testing::Message() << "bits " << bits << " sym " << sym << " group " << group);
        EXPECT_TRUE(at::equal(got.codes, expected->codes));
        EXPECT_LE((got.q - expected->weight).abs().max().item<float>(), kSameOrderTol);
        EXPECT_TRUE(at::equal(got.scales, expected->scales));
        EXPECT_TRUE(at::equal(got.zeros, expected->zeros));
      }
    }
  }
}

TEST(GptqBlockRefTest, SeveralBlocksWithLazyUpdatesMatchGptqQuantize) {
  const int64_t rows = 40, cols = 320, block = 128, group = 64;
  at::Tensor h = RandomHessian(cols, 800, 5);
  at::Tensor u = FactorU(h);
  at::manual_seed(6);
  at::Tensor w = at::randn({rows, cols}, at::kFloat);
  GptqOptions o;
  o.grid.bits = 3;
  o.group_size = group;
  o.block_size = block;
  auto expected = GptqQuantize(w, h, o, "blocks");
  ASSERT_TRUE(expected.ok()) << expected.status();

  at::Tensor cur = w.clone();
  at::Tensor codes = at::zeros({rows, cols}, at::kByte);
  for (int64_t b0 = 0; b0 < cols; b0 += block) {
    const int64_t count = std::min(block, cols - b0);
    BlockResult r = RunRef(cur, u, b0, count, group, 3, false);
    codes.narrow(1, b0, count).copy_(r.codes);
    if (b0 + count < cols) {
      at::Tensor rest = cur.narrow(1, b0 + count, cols - b0 - count);
      rest.sub_(at::matmul(r.err, u.narrow(0, b0, count).narrow(1, b0 + count, cols - b0 - count)));
    }
  }
  const double mismatch = codes.ne(expected->codes).to(at::kDouble).mean().item<double>();
  EXPECT_LE(mismatch, kMultiBlockMaxCodeMismatch);
}

TEST(GptqBlockRefTest, ErrorTimesFactorRebuildsTheQuantizationError) {
  // e_i = (w_i - q_i) / U_ii with w_i = w0_i - sum_{k<i} e_k U_ki, so w0 - q = E triu(U).
  const int64_t rows = 17, cols = 96;
  at::Tensor u = FactorU(RandomHessian(cols, 300, 7));
  at::manual_seed(8);
  at::Tensor w0 = at::randn({rows, cols}, at::kFloat);
  BlockResult r = RunRef(w0.clone(), u, 0, cols, 32, 4, false);
  at::Tensor lhs = (w0 - r.q).to(at::kDouble);
  at::Tensor rhs = at::matmul(r.err.to(at::kDouble), at::triu(u.to(at::kDouble)));
  EXPECT_LE((lhs - rhs).norm().item<double>(), kIdentityRelTol * lhs.norm().item<double>());
  // The compensated block left in w is what the last column saw: its quantization error is e U_ii.
  at::Tensor last = r.w.select(1, cols - 1) - r.q.select(1, cols - 1);
  EXPECT_TRUE(at::allclose(last, r.err.select(1, cols - 1) * u[cols - 1][cols - 1], 1e-5, 1e-6));
}

TEST(GptqBlockRefTest, RejectsInconsistentArguments) {
  std::vector<float> buf(4 * 300, 1.0f);
  GptqBlockArgs a;
  a.rows = 2;
  a.count = 300;
  a.w = a.q = a.err = a.scales = a.zeros = buf.data();
  a.u = buf.data();
  a.ldw = a.ldu = a.ldq = a.lde = 300;
  a.ldg = 1;
  EXPECT_EQ(GptqBlockRef(a).code(), absl::StatusCode::kInvalidArgument);  // > 256 columns
  a.count = 8;
  a.ldw = 4;
  EXPECT_EQ(GptqBlockRef(a).code(), absl::StatusCode::kInvalidArgument);  // ldw < count
  a.ldw = 8;
  a.u = nullptr;
  EXPECT_EQ(GptqBlockRef(a).code(), absl::StatusCode::kInvalidArgument);
}

#if defined(PTQ_HAVE_CUDA)
// Runs both versions on the same random block, with leading dimensions wider than the block.
void CompareCuda(int64_t rows, int64_t count, int64_t group_cols, int bits, bool sym, bool fit,
                 uint64_t seed) {
  SCOPED_TRACE(::testing::Message() << "rows " << rows << " count " << count << " group "
                                  << group_cols << " bits " << bits << " fit " << fit);
  const int64_t ld = count + 3;
  const int64_t groups = group_cols > 0 ? (count + group_cols - 1) / group_cols : 1;
  at::Tensor u = FactorU(RandomHessian(count, 2 * count + 8, seed));
  at::Tensor uld = at::zeros({count, ld}, at::kFloat);
  uld.narrow(1, 0, count).copy_(u);
  at::manual_seed(seed + 1);
  std::vector<float> w(rows * ld), q(rows * ld, 0.0f), err(rows * ld, 0.0f);
  std::vector<uint8_t> codes(rows * ld, 0);
  at::Tensor wt = at::randn({rows, ld}, at::kFloat).contiguous();
  std::copy(wt.data_ptr<float>(), wt.data_ptr<float>() + rows * ld, w.begin());
  std::vector<float> scales(rows * groups), zeros(rows * groups);
  for (int64_t i = 0; i < rows * groups; ++i) {
    scales[i] = 0.05f + 0.01f * static_cast<float>(i % 7);
    zeros[i] = static_cast<float>((i % 3) + ((1 << bits) - 1) / 2 - 1);
  }
  std::vector<float> ul(uld.data_ptr<float>(), uld.data_ptr<float>() + count * ld);

  ptq::testing::DeviceBuffer<float> dw(w), du(ul), dq(q), de(err), ds(scales), dz(zeros);
  ptq::testing::DeviceBuffer<uint8_t> dc(codes);
  GptqBlockArgs a;
  a.rows = rows;
  a.count = count;
  a.ldw = a.ldq = a.lde = ld;
  a.ldu = ld;
  a.ldg = groups;
  a.group_cols = group_cols;
  a.fit_grids = fit;
  a.bits = bits;
  a.sym = sym;
  a.w = dw.get();
  a.u = du.get();
  a.q = dq.get();
  a.codes = dc.get();
  a.err = de.get();
  a.scales = ds.get();
  a.zeros = dz.get();
  ptq::testing::TestStream stream;
  ASSERT_TRUE(GptqBlockCuda(a, stream.get()).ok());
  ASSERT_EQ(stream.Sync(), cudaSuccess);

  a.w = w.data();
  a.u = ul.data();
  a.q = q.data();
  a.codes = codes.data();
  a.err = err.data();
  a.scales = scales.data();
  a.zeros = zeros.data();
  ASSERT_TRUE(GptqBlockRef(a).ok());

  auto count_off = [&](const std::vector<float>& x, const std::vector<float>& y) {
    int64_t off = 0;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < count; ++c)
        off += std::fabs(x[r * ld + c] - y[r * ld + c]) > kCudaAbsTol;
    return static_cast<double>(off) / static_cast<double>(rows * count);
  };
  EXPECT_LE(count_off(dq.Host(), q), kCudaMaxMismatchFraction);
  EXPECT_LE(count_off(de.Host(), err), kCudaMaxMismatchFraction);
  EXPECT_LE(count_off(dw.Host(), w), kCudaMaxMismatchFraction);
  std::vector<uint8_t> hc = dc.Host();
  int64_t code_off = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < count; ++c) code_off += hc[r * ld + c] != codes[r * ld + c];
  EXPECT_LE(static_cast<double>(code_off) / static_cast<double>(rows * count),
            kCudaMaxMismatchFraction);
  if (fit) {
    EXPECT_EQ(ds.Host(), scales);
    EXPECT_EQ(dz.Host(), zeros);
  }
}

TEST(GptqBlockCudaTest, MatchesReferenceOnRandomAndEdgeShapes) {
  if (std::string why = ptq::testing::CudaUnavailableReason(); !why.empty()) GTEST_SKIP() << why;
  uint64_t seed = 10;
  for (int64_t rows : {1, 31, 32, 33, 65, 700}) {
    for (int64_t count : {1, 7, 128, 256}) {
      CompareCuda(rows, count, 0, 4, false, true, seed++);
      CompareCuda(rows, count, 32, 3, false, true, seed++);
    }
  }
  CompareCuda(300, 128, 128, 2, true, true, seed++);
  CompareCuda(300, 128, 64, 4, false, false, seed++);
  CompareCuda(4096, 128, 128, 4, false, true, seed++);
}
#else
TEST(GptqBlockCudaTest, MatchesReferenceOnRandomAndEdgeShapes) {
  GTEST_SKIP() << ptq::testing::CudaUnavailableReason();
}
#endif

}  // namespace
}  // namespace ptq::kernels
