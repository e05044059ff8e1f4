// HessianAccumulator fed CUDA activations against the same accumulator fed the same activations on
// the CPU: the statistics a GPU run collects must be the CPU run's up to float32 GEMM rounding.
#include "core/stats/hessian_accumulator.h"

#include "tests/gpu/gpu_test_util.h"

namespace ptq {
namespace {

using gpu_testing::Cuda;

// Each Add forms x^T x in float32 (cuBLAS on CUDA, the CPU BLAS here), so sums of a few hundred
// tokens differ by a few float32 ulps of the largest entries; the accumulation itself is exact.
constexpr double kFloat32GemmRelTol = 1e-5;

TEST(HessianAccumulatorGpuTest, CudaAddsMatchCpuAdds) {
  PTQ_SKIP_WITHOUT_GPU();
  const int64_t dim = 512;
  HessianAccumulator cpu(dim), gpu(dim);
  at::manual_seed(1);
  for (int batch = 0; batch < 4; ++batch) {
    // [windows, tokens, dim] with a mean offset, as hidden states have; one batch in bfloat16.
    at::Tensor x = at::randn({2, 256, dim}) * 0.7 + 0.2;
    if (batch == 3) x = x.to(at::kBFloat16);
    cpu.Add(x);
    gpu.Add(Cuda(x));
  }
  EXPECT_EQ(gpu.count(), cpu.count());
  const at::Tensor h_cpu = cpu.Hessian(), h_gpu = gpu.Hessian();
  ASSERT_EQ(h_gpu.sizes(), h_cpu.sizes());
  EXPECT_LE(gpu_testing::MaxRelativeDiff(h_gpu, h_cpu), kFloat32GemmRelTol);
  EXPECT_GT(h_cpu.abs().max().item<double>(), 0.0);  // not equal merely because nothing was added
}

TEST(HessianAccumulatorGpuTest, ShardsFromBothDevicesMergeToTheOneProcessSum) {
  PTQ_SKIP_WITHOUT_GPU();
  const int64_t dim = 256;
  at::manual_seed(2);
  const at::Tensor a = at::randn({300, dim}), b = at::randn({200, dim});
  HessianAccumulator whole(dim), shard_cpu(dim), shard_gpu(dim);
  whole.Add(a);
  whole.Add(b);
  shard_cpu.Add(a);
  shard_gpu.Add(Cuda(b));
  shard_cpu.Merge(shard_gpu);
  EXPECT_EQ(shard_cpu.count(), whole.count());
  EXPECT_LE(gpu_testing::MaxRelativeDiff(shard_cpu.Hessian(), whole.Hessian()), kFloat32GemmRelTol);
}

}  // namespace
}  // namespace ptq
