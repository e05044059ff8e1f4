// sum += X^T X for one batch of tokens, in a fixed order (deterministic, no atomics): the tokens are
// taken in chunks of kHessianChunkTokens from the batch's first; within a chunk each product
// x_ti x_tj is formed and summed in float32 in token order, and each chunk's float32 partial is
// added to a float64 accumulator, chunk by chunk; the accumulator is then added to sum. Same bits on
// every run and on CPU and GPU (the kernel is compiled without fused multiply-add).
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cuda_stream.h"

namespace ptq::kernels {

inline constexpr int64_t kHessianChunkTokens = 32;

struct HessianAccumulateArgs {
  int64_t tokens = 0;
  int64_t dim = 0;
  const float* x = nullptr;  // [tokens, dim] row-major
  double* sum = nullptr;     // [dim, dim] row-major, accumulated into (symmetric)
};

inline const char* HessianAccumulateArgsError(const HessianAccumulateArgs& a) {
  if (a.tokens < 0 || a.dim < 0) return "negative size";
  if (a.dim > 0 && (a.sum == nullptr || (a.tokens > 0 && a.x == nullptr))) return "null pointer";
  return nullptr;
}

absl::Status HessianAccumulateRef(const HessianAccumulateArgs& args);

// CUDA: 64 x 64 output tiles on and above the diagonal (mirrored below), 256 threads of 4 x 4
// outputs each, chunks of tokens staged in shared memory. Launched on `stream`; InvalidArgument or
// Internal (launch failure). Only with PTQ_HAVE_CUDA.
absl::Status HessianAccumulateCuda(const HessianAccumulateArgs& args, CudaStream stream);

}  // namespace ptq::kernels
