// Integer packing of compressed-tensors' "pack-quantized" format (llm-compressor's checkpoints; see
// docs/serving.md): each row of b-bit values is one continuous bit stream in int32 words, least
// significant bits first, 32 values filling exactly b words, the last word zero-padded, so a row of
// n values takes ceil(n * b / 32) words. This is compressed-tensors >= 0.18's dense layout
// (compressors/pack_quantized/helpers.py, pack_to_int32); for 2, 4 and 8 bits it is also the
// layout of every earlier version. Values are stored unsigned: compressed-tensors' signed value
// plus 2^(b-1), which is exactly our code (and our zero point).
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace ptq::pack_quantized {

inline bool SupportedBits(int bits) { return bits >= 1 && bits <= 8; }
inline int64_t PackedWords(int64_t values, int bits) { return (values * bits + 31) / 32; }

// values: [rows, cols] row-major, each < 2^bits. Returns [rows, PackedWords(cols, bits)] int32.
absl::StatusOr<std::vector<int32_t>> PackRows(const std::vector<uint8_t>& values, int64_t rows,
                                              int64_t cols, int bits);
// The inverse: packed [rows, PackedWords(cols, bits)] -> [rows, cols] values.
absl::StatusOr<std::vector<uint8_t>> UnpackRows(const std::vector<int32_t>& packed, int64_t rows,
                                                int64_t cols, int bits);

}  // namespace ptq::pack_quantized
