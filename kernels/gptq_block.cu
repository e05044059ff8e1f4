// One launch per lazy block: each thread owns one row (one warp of rows per CTA), keeps the row's
// block columns in shared memory (column-major per CTA so a column's values sit in consecutive
// banks), and walks the columns in order. Every thread reads the same U element at the same time,
// a broadcast from L1. Compiled with --fmad=false and IEEE division, so the results equal
// GptqBlockRef's bits.
#include <cuda_runtime.h>

#include "kernels/cuda_status.h"
#include "kernels/gptq_block.h"
#include "kernels/grid_fit.h"

namespace ptq::kernels {
namespace {

__global__ void GptqBlockKernel(GptqBlockArgs a, int64_t gc) {
  extern __shared__ float sw[];  // [count][blockDim.x]
  const int t = threadIdx.x;
  const int nt = blockDim.x;
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * nt;
  const int64_t nrows = a.rows - r0 < nt ? a.rows - r0 : nt;
  // Coalesced load of the CTA's rows: consecutive threads read consecutive columns of a row.
  for (int64_t idx = t; idx < nrows * a.count; idx += nt) {
    const int64_t lr = idx / a.count, c = idx % a.count;
    sw[c * nt + lr] = a.w[(r0 + lr) * a.ldw + c];
  }
  __syncthreads();
  const int64_t r = r0 + t;
  if (t < nrows) {
    const int maxq = (1 << a.bits) - 1;
    Grid grid{1.0f, 0.0f};
    for (int64_t i = 0; i < a.count; ++i) {
      if (i % gc == 0) {
        const int64_t gi = i / gc;
        if (a.fit_grids) {
          float lo = INFINITY, hi = -INFINITY;
          const int64_t end = i + gc < a.count ? i + gc : a.count;
          for (int64_t k = i; k < end; ++k) {
            lo = fminf(lo, sw[k * nt + t]);
            hi = fmaxf(hi, sw[k * nt + t]);
          }
          grid = GridFromRange(lo, hi, a.bits, a.sym, a.min_zero, a.fp16_scales);
          a.scales[r * a.ldg + gi] = grid.scale;
          a.zeros[r * a.ldg + gi] = grid.zero;
        } else {
          grid = Grid{a.scales[r * a.ldg + gi], a.zeros[r * a.ldg + gi]};
        }
      }
      const float wi = sw[i * nt + t];
      const float code = QuantizeCode(wi, grid, maxq);
      const float deq = DequantizeCode(code, grid);
      const float* urow = a.u + i * a.ldu;
      const float e = (wi - deq) / urow[i];
      a.q[r * a.ldq + i] = deq;
      if (a.codes != nullptr) a.codes[r * a.ldq + i] = static_cast<uint8_t>(code);
      a.err[r * a.lde + i] = e;
      for (int64_t j = i + 1; j < a.count; ++j) sw[j * nt + t] -= e * urow[j];
    }
  }
  // The compensated block goes back, as the reference leaves it in w.
  __syncthreads();
  for (int64_t idx = t; idx < nrows * a.count; idx += nt) {
    const int64_t lr = idx / a.count, c = idx % a.count;
    a.w[(r0 + lr) * a.ldw + c] = sw[c * nt + lr];
  }
}

}  // namespace

absl::Status GptqBlockCuda(const GptqBlockArgs& a, CudaStream stream) {
  if (const char* e = GptqBlockArgsError(a)) return BadArguments("GptqBlockCuda", e);
  if (a.rows == 0) return absl::OkStatus();
  const int64_t gc = a.group_cols > 0 ? (a.group_cols < a.count ? a.group_cols : a.count) : a.count;
  // One warp per CTA: a 4096-row layer spreads over 128 CTAs (about one per H100 SM) instead of 64,
  // and a CTA holds at most 32 x 256 floats (32 KiB) of shared memory.
  const int threads = 32;
  const size_t smem = static_cast<size_t>(threads) * a.count * sizeof(float);
  const unsigned blocks = static_cast<unsigned>((a.rows + threads - 1) / threads);
  GptqBlockKernel<<<blocks, threads, smem, stream>>>(a, gc);
  return LaunchStatus("GptqBlockCuda");
}

}  // namespace ptq::kernels
