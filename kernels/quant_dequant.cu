// One thread per element, consecutive threads on consecutive columns (coalesced); the grid reads
// hit the same few scales per warp.
#include <cuda_runtime.h>

#include "kernels/grid_fit.h"
#include "kernels/cuda_status.h"
#include "kernels/quant_dequant.h"

namespace ptq::kernels {
namespace {

__global__ void QuantDequantKernel(QuantDequantArgs a, int maxq) {
  const int64_t n = a.rows * a.cols;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < n;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = idx / a.cols, k = idx % a.cols;
    const int64_t g = a.g_idx ? a.g_idx[k] : (a.group_size > 0 ? k / a.group_size : 0);
    const Grid grid{a.scales[r * a.groups + g], a.zeros[r * a.groups + g]};
    const float code = QuantizeCode(a.w[idx], grid, maxq);
    if (a.codes) a.codes[idx] = static_cast<uint8_t>(code);
    if (a.deq) a.deq[idx] = DequantizeCode(code, grid);
  }
}

}  // namespace

absl::Status QuantDequantCuda(const QuantDequantArgs& a, CudaStream stream) {
  if (const char* e = QuantDequantArgsError(a)) return BadArguments("QuantDequantCuda", e);
  const int64_t n = a.rows * a.cols;
  if (n == 0) return absl::OkStatus();
  const int threads = 256;
  const int64_t want = (n + threads - 1) / threads;
  const unsigned blocks = static_cast<unsigned>(want < 65536 ? want : 65536);
  QuantDequantKernel<<<blocks, threads, 0, stream>>>(a, (1 << a.bits) - 1);
  return LaunchStatus("QuantDequantCuda");
}

}  // namespace ptq::kernels
