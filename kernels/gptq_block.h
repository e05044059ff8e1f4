// GPTQ's column loop inside one lazy block, fused: for each column i of the block, quantize it with
// each row's grid, form the error e = (w_i - q_i) / U_ii and subtract e U_i,j from the block's later
// columns j (docs/algorithms.md). Rows are independent, so the CUDA kernel gives each thread one row
// and the whole block takes one launch instead of one launch sequence per column. The caller does
// the lazy update of the columns after the block, W[:, b1:] -= E U[b0:b1, b1:], as one GEMM.
#pragma once

#include <algorithm>
#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cuda_stream.h"

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

// nullptr when the arguments are consistent, else what is wrong. Inline so the CUDA launcher's
// library needs no other part of kernels/.
inline const char* GptqBlockArgsError(const GptqBlockArgs& a) {
  if (a.rows < 0) return "rows < 0";
  if (a.count < 1 || a.count > kGptqMaxBlockColumns) return "block columns outside 1..256";
  if (a.bits < 1 || a.bits > 8) return "bits outside 1..8";
  if (a.w == nullptr || a.u == nullptr || a.q == nullptr || a.err == nullptr || a.scales == nullptr ||
      a.zeros == nullptr) {
    return "a required pointer is null";
  }
  const int64_t gc = a.group_cols > 0 ? std::min(a.group_cols, a.count) : a.count;
  const int64_t groups = (a.count + gc - 1) / gc;
  if (a.ldw < a.count || a.ldu < a.count || a.ldq < a.count || a.lde < a.count || a.ldg < groups) {
    return "a leading dimension is smaller than the block";
  }
  return nullptr;
}

// CPU reference: the same arithmetic, in the same order, as core/quant/gptq_quantizer.cc's column loop.
absl::Status GptqBlockRef(const GptqBlockArgs& args);

// CUDA version on device pointers, launched on `stream`. InvalidArgument for inconsistent
// arguments, Internal with CUDA's error name when the launch fails. Asynchronous: the results are
// ready once `stream` gets there. Defined only where the project was built with CUDA
// (PTQ_HAVE_CUDA).
absl::Status GptqBlockCuda(const GptqBlockArgs& args, CudaStream stream);

}  // namespace ptq::kernels
