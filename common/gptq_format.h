// Integer packing of the GPTQ checkpoint format (docs/formats.md): b-bit values packed into int32
// words least significant bits first, as one continuous bit stream, so 3-bit values cross word
// boundaries exactly as GPTQ's loaders expect (32 values fill 3 words).
// `qweight` packs along the input dimension (rows of [K, N]); `qzeros` along the output dimension.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace ptq::gptq {

inline bool SupportedBits(int bits) { return bits == 2 || bits == 3 || bits == 4 || bits == 8; }

// values: [rows, cols] row-major, each < 2^bits. Packs down each column: the result is
// [rows * bits / 32, cols] int32. REQUIRES rows * bits % 32 == 0 (checked).
absl::StatusOr<std::vector<int32_t>> PackRows(const std::vector<uint8_t>& values, int64_t rows,
                                              int64_t cols, int bits);
absl::StatusOr<std::vector<uint8_t>> UnpackRows(const std::vector<int32_t>& packed, int64_t rows,
                                                int64_t cols, int bits);
// Packs along each row: [rows, cols] -> [rows, cols * bits / 32]. REQUIRES cols * bits % 32 == 0.
absl::StatusOr<std::vector<int32_t>> PackCols(const std::vector<uint8_t>& values, int64_t rows,
                                              int64_t cols, int bits);
absl::StatusOr<std::vector<uint8_t>> UnpackCols(const std::vector<int32_t>& packed, int64_t rows,
                                                int64_t cols, int bits);

}  // namespace ptq::gptq
