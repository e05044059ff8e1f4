// GPTQ's column loop inside one lazy block, fused: for each column i of the block, quantize it with
// each row's grid, form the error e = (w_i - q_i) / U_ii and subtract e U_i,j from the block's later
// columns j (docs/algorithms.md). Rows are independent, so the CUDA kernel gives each thread one row
// and the whole block takes one launch instead of one launch sequence per column. The caller does
// the lazy update of the columns after the block, W[:, b1:] -= E U[b0:b1, b1:], as one GEMM.
#pragma once

#include <cstdint>

#include "absl/status/status.h"

namespace ptq::kernels {

inline constexpr int64_t kGptqMaxBlockColumns = 256;

// Row-major matrices with explicit leading dimensions (elements), so a block can be a view of a
// layer's [rows, in] weights. All pointers are host pointers for the reference and device pointers
// for the CUDA launcher.
struct GptqBlockArgs {
  int64_t rows = 0;
  int64_t count = 0;          // columns in the block, 1..kGptqMaxBlockColumns
  float* w = nullptr;         // [rows, count] (ld ldw): the block's current weights; compensated in place
  int64_t ldw = 0;
  const float* u = nullptr;   // U[b0:b1, b0:b1] (ld ldu): upper Cholesky factor of H^-1, in quantization order
  int64_t ldu = 0;
  float* q = nullptr;         // [rows, count] (ld ldq): dequantized weights out
  int64_t ldq = 0;
  uint8_t* codes = nullptr;   // [rows, count] (ld ldq): integer codes out; may be null
  float* err = nullptr;       // [rows, count] (ld lde): E = (w - q) / U_ii out, for the lazy update
  int64_t lde = 0;
  float* scales = nullptr;    // [rows, groups] (ld ldg): one grid per row and group of the block
  float* zeros = nullptr;
  int64_t ldg = 0;
  int64_t group_cols = 0;     // columns per grid (<= 0: one grid for the whole block)
  // true: fit min-max grids at each group start from the compensated weights (GPTQ's rule; blocks
  // hold whole groups) and write them to scales/zeros. false: read the given grids (per-channel
  // grids, static groups, MSE-searched grids).
  bool fit_grids = true;
  int bits = 4;
  bool sym = false;
  int min_zero = 0;           // smallest asymmetric zero (1 for the classic GPTQ checkpoint)
  bool fp16_scales = true;    // round fitted scales to float16, as the checkpoint stores them
};

// nullptr when the arguments are consistent, else what is wrong.
const char* GptqBlockArgsError(const GptqBlockArgs& args);

// CPU reference: the same arithmetic, in the same order, as core/quant/gptq_quantizer.cc's column loop.
absl::Status GptqBlockRef(const GptqBlockArgs& args);

// CUDA version on device pointers, launched on `stream` (a cudaStream_t; null: the default stream).
// Returns a cudaError_t (0: success; cudaErrorInvalidValue for inconsistent arguments). Defined only
// where the project was built with CUDA (PTQ_HAVE_CUDA).
int GptqBlockCuda(const GptqBlockArgs& args, void* stream);

}  // namespace ptq::kernels
