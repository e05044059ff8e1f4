// GPTQ's qweight packing (docs/formats.md): b-bit codes packed down each column into int32 words,
// least significant bits first, as one continuous bit stream, so 3-bit codes cross word boundaries
// (32 codes fill 3 words). [rows, cols] codes -> [rows * bits / 32, cols] words.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cuda_stream.h"

namespace ptq::kernels {

struct GptqPackArgs {
  int64_t rows = 0;               // input dimension K; rows * bits must be a multiple of 32
  int64_t cols = 0;               // output dimension N
  const uint8_t* codes = nullptr; // [rows, cols] row-major, each < 2^bits
  int bits = 4;                   // 2, 3, 4 or 8
  int32_t* packed = nullptr;      // [rows * bits / 32, cols] out
};

inline const char* GptqPackArgsError(const GptqPackArgs& a) {
  if (a.rows < 0 || a.cols < 0) return "negative size";
  // common/gptq_format's SupportedBits, spelled out so the CUDA library does not need common/.
  if (a.bits != 2 && a.bits != 3 && a.bits != 4 && a.bits != 8) return "bits must be 2, 3, 4 or 8";
  if ((a.rows * a.bits) % 32 != 0) return "rows * bits is not a multiple of 32";
  if (a.rows * a.cols > 0 && (a.codes == nullptr || a.packed == nullptr)) return "null pointer";
  return nullptr;
}

// The reference is common/gptq_format's PackRows (what the checkpoint writer uses).
absl::Status GptqPackRef(const GptqPackArgs& args);

// CUDA: one thread per 32 codes of a column (b words), consecutive threads on consecutive columns.
// Codes are masked to b bits. Launched on `stream`; InvalidArgument or Internal (launch failure).
// Only with PTQ_HAVE_CUDA.
absl::Status GptqPackCuda(const GptqPackArgs& args, CudaStream stream);

}  // namespace ptq::kernels
