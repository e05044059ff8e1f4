// The kernels as the quantizer calls them: on at::Tensors. CUDA tensors go to the CUDA kernel,
// launched on ATen's current stream of their device under a device guard, so a launch is ordered
// with the ATen work before and after it and stays asynchronous like any ATen op (a launch error
// comes back at once; a fault inside the kernel shows at the next synchronising call). CPU tensors
// go to the CPU reference, with the same argument checks, so callers and tests run everywhere.
// Every tensor of one call must be on one device. With tensors on CUDA where the kernels cannot run
// (no CUDA build, a libtorch without CUDA) the entries return FailedPrecondition with the reason.
#pragma once

#include <cstdint>
#include <string>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace ptq::kernels {

// "" when CUDA tensors can run the kernels in this process, else why not: built without the CUDA
// kernels, built against a libtorch without CUDA (PTQ_TORCH_CUDA unset), or no visible device.
std::string CudaKernelsUnavailableReason();

// sum += x^T x in HessianAccumulate's fixed order (bit-identical on CPU and CUDA).
// x: [..., dim], each leading index one token; float32 (other floating dtypes are converted first,
// as HessianAccumulator::Add does). sum: [dim, dim] float64, contiguous, written in place.
absl::Status HessianAccumulateAten(const at::Tensor& x, const at::Tensor& sum);

// The grid settings of GptqBlockArgs.
struct GptqBlockSettings {
  int64_t group_cols = 0;   // columns per grid; <= 0: one grid per block
  bool fit_grids = true;    // fit min-max grids at group starts, else read scales/zeros
  int bits = 4;
  bool sym = false;
  int min_zero = 0;         // 1 for the classic GPTQ checkpoint format
  bool fp16_scales = true;
};

// One lazy block (GptqBlockRef / GptqBlockCuda). 2-D float32 tensors whose last dimension is
// contiguous; views into a layer's tensors are fine (the row stride is the leading dimension).
struct GptqBlockTensors {
  at::Tensor w;       // [rows, count]: the block's current weights; compensated in place
  at::Tensor u;       // [count, count]: U[b0:b1, b0:b1], upper factor of H^-1 in quantization order
  at::Tensor q;       // [rows, count] out: dequantized weights
  at::Tensor codes;   // [rows, count] uint8 out, the same row stride as q; undefined: not written
  at::Tensor err;     // [rows, count] out: E = (w - q) / U_ii for the lazy update
  at::Tensor scales;  // [rows, groups]: written with fit_grids, read otherwise
  at::Tensor zeros;   // [rows, groups], the same row stride as scales
};
absl::Status GptqBlockAten(const GptqBlockTensors& t, const GptqBlockSettings& s);

// GPTQ's whole column loop over a layer's rows, in quantization order: GptqBlockAten on each lazy
// block of `block` columns, then W[:, b1:] -= E U[b0:b1, b1:] as one GEMM on the same device. What
// GptqQuantizeWithFactor's loop does, for the settings the block kernel supports (min-max grids
// fitted at group starts, or grids fixed before the loop). The caller permutes columns (act-order),
// zeroes dead inputs and maps codes and g_idx back, as GptqQuantizeWithFactor does around its loop.
//   w: [rows, cols] float32 contiguous, the working copy: compensated in place.
//   u: [cols, cols] float32, last dimension contiguous.
//   block: 1..256; with group_cols > 0 a multiple of group_cols (blocks hold whole groups).
//   fit_grids needs group_cols > 0 (per-row grids are fitted before the loop, on the original rows).
//   fixed_scales / fixed_zeros: without fit_grids, [rows, groups] float32 on w's device, column c
//   using group c / group_cols (group_cols <= 0: one grid per row, [rows, 1]).
struct GptqLoopResult {
  at::Tensor q;       // [rows, cols] float32
  at::Tensor codes;   // [rows, cols] uint8
  at::Tensor scales;  // [rows, groups] float32
  at::Tensor zeros;   // [rows, groups] float32
};
absl::StatusOr<GptqLoopResult> GptqColumnLoopAten(const at::Tensor& w, const at::Tensor& u,
                                                  int64_t block, const GptqBlockSettings& s,
                                                  const at::Tensor& fixed_scales = {},
                                                  const at::Tensor& fixed_zeros = {});

// Codes and dequantized weights from given grids (QuantDequantRef / QuantDequantCuda).
// w: [rows, cols] float32; scales, zeros: [rows, groups] float32; g_idx: undefined (column k uses
// group k / group_size, or group 0 when group_size <= 0) or [cols] int32 (act-order checkpoints;
// its range is checked here, which synchronises a CUDA device once).
struct QuantDequantResult {
  at::Tensor codes;  // [rows, cols] uint8
  at::Tensor deq;    // [rows, cols] float32
};
absl::StatusOr<QuantDequantResult> QuantDequantAten(const at::Tensor& w, const at::Tensor& scales,
                                                    const at::Tensor& zeros, const at::Tensor& g_idx,
                                                    int64_t group_size, int bits);

// qweight: codes [K, N] uint8 (K = in, N = out: a QuantizedLinear's codes transposed), packed along
// K into [K * bits / 32, N] int32 (docs/formats.md). Codes of 2^bits or more are refused (one
// reduction, which synchronises a CUDA device once).
absl::StatusOr<at::Tensor> GptqPackAten(const at::Tensor& codes, int bits);

}  // namespace ptq::kernels
