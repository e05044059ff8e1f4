// Quantize and dequantize a [rows, cols] weight with given grids: code = clamp(round(w / s) + z, 0,
// 2^b - 1) (round half to even), w_hat = s (code - z), where (s, z) is the grid of the element's row
// and group (docs/algorithms.md, "Grid"). One elementwise pass; the grids come from GPTQ, RTN or a
// checkpoint's scales and zeros.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cuda_stream.h"

namespace ptq::kernels {

struct QuantDequantArgs {
  int64_t rows = 0;
  int64_t cols = 0;
  const float* w = nullptr;       // [rows, cols] row-major
  const float* scales = nullptr;  // [rows, groups] row-major
  const float* zeros = nullptr;   // [rows, groups]
  int64_t groups = 1;
  int64_t group_size = 0;         // column k uses group k / group_size (<= 0: group 0)
  const int32_t* g_idx = nullptr; // [cols] optional: column k uses group g_idx[k] (act-order checkpoints)
  int bits = 4;
  uint8_t* codes = nullptr;       // [rows, cols] out; may be null
  float* deq = nullptr;           // [rows, cols] out; may be null
};

// nullptr when the arguments are consistent, else what is wrong (g_idx entries are checked by the
// reference only: out-of-range groups are the caller's bug).
inline const char* QuantDequantArgsError(const QuantDequantArgs& a) {
  if (a.rows < 0 || a.cols < 0) return "negative size";
  if (a.bits < 1 || a.bits > 8) return "bits outside 1..8";
  if (a.groups < 1) return "groups < 1";
  if (a.w == nullptr || a.scales == nullptr || a.zeros == nullptr) return "a required pointer is null";
  if (a.g_idx == nullptr && a.group_size > 0 && (a.cols + a.group_size - 1) / a.group_size > a.groups) {
    return "more column groups than grids";
  }
  return nullptr;
}

absl::Status QuantDequantRef(const QuantDequantArgs& args);

// CUDA version on device pointers, launched on `stream`; InvalidArgument or Internal (launch
// failure). g_idx entries are not checked on the device: out-of-range groups are the caller's bug
// (the ATen entry checks them). Only with PTQ_HAVE_CUDA.
absl::Status QuantDequantCuda(const QuantDequantArgs& args, CudaStream stream);

}  // namespace ptq::kernels
