#include "common/pack_quantized_format.h"

#include "absl/strings/str_cat.h"

namespace ptq::pack_quantized {

absl::StatusOr<std::vector<int32_t>> PackRows(const std::vector<uint8_t>& values, int64_t rows,
                                              int64_t cols, int bits) {
  if (!SupportedBits(bits)) return absl::InvalidArgumentError(absl::StrCat("unsupported bits ", bits));
  if (rows < 0 || cols < 0 || static_cast<int64_t>(values.size()) != rows * cols) {
    return absl::InvalidArgumentError("values do not match the shape");
  }
  const int64_t words = PackedWords(cols, bits);
  std::vector<uint32_t> out(rows * words, 0);
  for (int64_t r = 0; r < rows; ++r) {
    uint32_t* row = out.data() + r * words;
    for (int64_t c = 0; c < cols; ++c) {
      const uint32_t v = values[r * cols + c];
      if (v >> bits) return absl::InvalidArgumentError(absl::StrCat("value ", v, " exceeds ", bits, " bits"));
      const int64_t pos = c * bits;
      const int off = static_cast<int>(pos % 32);
      row[pos / 32] |= v << off;
      if (off + bits > 32) row[pos / 32 + 1] |= v >> (32 - off);  // crosses into the next word
    }
  }
  return std::vector<int32_t>(out.begin(), out.end());
}

absl::StatusOr<std::vector<uint8_t>> UnpackRows(const std::vector<int32_t>& packed, int64_t rows,
                                                int64_t cols, int bits) {
  if (!SupportedBits(bits)) return absl::InvalidArgumentError(absl::StrCat("unsupported bits ", bits));
  const int64_t words = PackedWords(cols, bits);
  if (rows < 0 || cols < 0 || static_cast<int64_t>(packed.size()) != rows * words) {
    return absl::InvalidArgumentError("packed size does not match the shape");
  }
  const uint32_t* in = reinterpret_cast<const uint32_t*>(packed.data());
  std::vector<uint8_t> out(rows * cols);
  for (int64_t r = 0; r < rows; ++r) {
    const uint32_t* row = in + r * words;
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t pos = c * bits;
      const int off = static_cast<int>(pos % 32);
      uint64_t v = row[pos / 32] >> off;
      if (off + bits > 32) v |= static_cast<uint64_t>(row[pos / 32 + 1]) << (32 - off);
      out[r * cols + c] = static_cast<uint8_t>(v & ((1u << bits) - 1));
    }
  }
  return out;
}

}  // namespace ptq::pack_quantized
