#include <cuda_runtime.h>

#include "kernels/cuda_status.h"
#include "kernels/gptq_pack.h"

namespace ptq::kernels {
namespace {

// Thread (chunk, column) packs codes 32 chunk .. 32 chunk + 31 of the column: they fill exactly
// `bits` words, which is what makes the 3-bit layout's cross-word fields come out right.
__global__ void GptqPackKernel(GptqPackArgs a) {
  const int64_t chunks = (a.rows + 31) / 32;
  const int64_t n = chunks * a.cols;
  const uint32_t mask = (1u << a.bits) - 1;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < n;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t chunk = idx / a.cols, c = idx % a.cols;
    const int64_t k0 = chunk * 32;
    const int64_t k1 = k0 + 32 < a.rows ? k0 + 32 : a.rows;
    int64_t word = k0 * a.bits / 32;
    uint64_t acc = 0;
    int filled = 0;
    for (int64_t k = k0; k < k1; ++k) {
      acc |= static_cast<uint64_t>(a.codes[k * a.cols + c] & mask) << filled;
      filled += a.bits;
      if (filled >= 32) {
        a.packed[word * a.cols + c] = static_cast<int32_t>(static_cast<uint32_t>(acc));
        ++word;
        acc >>= 32;
        filled -= 32;
      }
    }
  }
}

}  // namespace

absl::Status GptqPackCuda(const GptqPackArgs& a, CudaStream stream) {
  if (const char* e = GptqPackArgsError(a)) return BadArguments("GptqPackCuda", e);
  const int64_t n = (a.rows + 31) / 32 * a.cols;
  if (n == 0) return absl::OkStatus();
  const int threads = 256;
  const int64_t want = (n + threads - 1) / threads;
  const unsigned blocks = static_cast<unsigned>(want < 65536 ? want : 65536);
  GptqPackKernel<<<blocks, threads, 0, stream>>>(a);
  return LaunchStatus("GptqPackCuda");
}

}  // namespace ptq::kernels
