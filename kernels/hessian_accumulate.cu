#include <cuda_runtime.h>

#include "kernels/cuda_status.h"
#include "kernels/hessian_accumulate.h"

namespace ptq::kernels {
namespace {

constexpr int kTile = 64;
constexpr int kChunk = static_cast<int>(kHessianChunkTokens);

// CTA (bi, bj) with bi <= bj computes rows bi*64.. and columns bj*64.. of the sum; thread (ty, tx)
// the 4 x 4 outputs at rows ty*4.., columns tx*4... Padding tokens and columns are zeros, which add
// exactly nothing to a float32 partial.
__global__ void HessianKernel(HessianAccumulateArgs a) {
  const int bi = blockIdx.y, bj = blockIdx.x;
  if (bi > bj) return;
  __shared__ __align__(16) float xi[kChunk][kTile];
  __shared__ __align__(16) float xj[kChunk][kTile];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t i0 = static_cast<int64_t>(bi) * kTile, j0 = static_cast<int64_t>(bj) * kTile;
  double acc[4][4] = {};
  for (int64_t t0 = 0; t0 < a.tokens; t0 += kChunk) {
    for (int e = threadIdx.x; e < kChunk * kTile; e += blockDim.x) {
      const int t = e / kTile, c = e % kTile;
      const bool tok = t0 + t < a.tokens;
      xi[t][c] = tok && i0 + c < a.dim ? a.x[(t0 + t) * a.dim + i0 + c] : 0.0f;
      xj[t][c] = tok && j0 + c < a.dim ? a.x[(t0 + t) * a.dim + j0 + c] : 0.0f;
    }
    __syncthreads();
    float p[4][4] = {};
    for (int t = 0; t < kChunk; ++t) {
      // 16-byte loads: a warp reads 2 distinct rows of xi (broadcast) and 16 float4s of xj.
      const float4 a4 = *reinterpret_cast<const float4*>(&xi[t][ty * 4]);
      const float4 b4 = *reinterpret_cast<const float4*>(&xj[t][tx * 4]);
      const float vi[4] = {a4.x, a4.y, a4.z, a4.w};
      const float vj[4] = {b4.x, b4.y, b4.z, b4.w};
      for (int u = 0; u < 4; ++u) {
        for (int v = 0; v < 4; ++v) p[u][v] += vi[u] * vj[v];
      }
    }
    for (int u = 0; u < 4; ++u) {
      for (int v = 0; v < 4; ++v) acc[u][v] += static_cast<double>(p[u][v]);
    }
    __syncthreads();
  }
  for (int u = 0; u < 4; ++u) {
    for (int v = 0; v < 4; ++v) {
      const int64_t i = i0 + ty * 4 + u, j = j0 + tx * 4 + v;
      if (i >= a.dim || j >= a.dim) continue;
      if (bi == bj && j < i) continue;  // the diagonal tile's lower half is its upper half mirrored
      a.sum[i * a.dim + j] += acc[u][v];
      if (i != j) a.sum[j * a.dim + i] += acc[u][v];
    }
  }
}

}  // namespace

absl::Status HessianAccumulateCuda(const HessianAccumulateArgs& a, CudaStream stream) {
  if (const char* e = HessianAccumulateArgsError(a)) return BadArguments("HessianAccumulateCuda", e);
  if (a.dim == 0 || a.tokens == 0) return absl::OkStatus();
  const unsigned tiles = static_cast<unsigned>((a.dim + kTile - 1) / kTile);
  if (tiles > 65535) return BadArguments("HessianAccumulateCuda", "dim above 65535 * 64");
  HessianKernel<<<dim3(tiles, tiles), 256, 0, stream>>>(a);
  return LaunchStatus("HessianAccumulateCuda");
}

}  // namespace ptq::kernels
