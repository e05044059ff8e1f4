// sum += X^T X for one batch of tokens, in a fixed order (deterministic, no atomics): the tokens are
// taken in chunks of kHessianChunkTokens from the batch's first; within a chunk each product
// x_ti x_tj is formed and summed in float32 in token order, and each chunk's float32 partial is
// added to a float64 accumulator, chunk by chunk; the accumulator is then added to sum. Same bits on
// every run and on CPU and GPU (the kernel is compiled without fused multiply-add).
#pragma once

#include <cstdint>

#include "absl/status/status.h"

namespace ptq::kernels {

inline constexpr int64_t kHessianChunkTokens = 32;

struct HessianAccumulateArgs {
  int64_t tokens = 0;
  int64_t dim = 0;
  const float* x = nullptr;  // [tokens, dim] row-major
  double* sum = nullptr;     // [dim, dim] row-major, accumulated into (symmetric)
};

const char* HessianAccumulateArgsError(const HessianAccumulateArgs& args);

absl::Status HessianAccumulateRef(const HessianAccumulateArgs& args);

// CUDA: 64 x 64 output tiles on and above the diagonal (mirrored below), 256 threads of 4 x 4
// outputs each, chunks of tokens staged in shared memory. Returns a cudaError_t (0: success). Only
// with PTQ_HAVE_CUDA.
int HessianAccumulateCuda(const HessianAccumulateArgs& args, void* stream);

}  // namespace ptq::kernels
