// GPTQ's qweight packing (docs/formats.md): b-bit codes packed down each column into int32 words,
// least significant bits first, as one continuous bit stream, so 3-bit codes cross word boundaries
// (32 codes fill 3 words). [rows, cols] codes -> [rows * bits / 32, cols] words.
#pragma once

#include <cstdint>

#include "absl/status/status.h"

namespace ptq::kernels {

struct GptqPackArgs {
  int64_t rows = 0;               // input dimension K; rows * bits must be a multiple of 32
  int64_t cols = 0;               // output dimension N
  const uint8_t* codes = nullptr; // [rows, cols] row-major, each < 2^bits
  int bits = 4;                   // 2, 3, 4 or 8
  int32_t* packed = nullptr;      // [rows * bits / 32, cols] out
};

const char* GptqPackArgsError(const GptqPackArgs& args);

// The reference is common/gptq_format's PackRows (what the checkpoint writer uses).
absl::Status GptqPackRef(const GptqPackArgs& args);

// CUDA: one thread per 32 codes of a column (b words), consecutive threads on consecutive columns.
// Codes are masked to b bits. Returns a cudaError_t (0: success). Only with PTQ_HAVE_CUDA.
int GptqPackCuda(const GptqPackArgs& args, void* stream);

}  // namespace ptq::kernels
