#include "common/gptq_format.h"

#include "absl/strings/str_cat.h"

namespace ptq::gptq {
namespace {

absl::Status CheckPackable(int64_t length, int bits, const char* what) {
  if (!SupportedBits(bits)) {
    return absl::InvalidArgumentError(absl::StrCat("unsupported bits ", bits, " (2, 3, 4 or 8)"));
  }
  if ((length * bits) % 32 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, " of ", length, " values at ", bits,
                                                   " bits do not fill whole 32-bit words"));
  }
  return absl::OkStatus();
}

// Value i of a stream occupies bits [bits*i, bits*i + bits) of the words, least significant first.
inline void Put(uint32_t* words, int64_t stride, int64_t i, int bits, uint32_t v) {
  const int64_t pos = i * bits;
  const int64_t w = pos / 32;
  const int off = static_cast<int>(pos % 32);
  words[w * stride] |= v << off;
  if (off + bits > 32) words[(w + 1) * stride] |= v >> (32 - off);
}

inline uint32_t Get(const uint32_t* words, int64_t stride, int64_t i, int bits) {
  const int64_t pos = i * bits;
  const int64_t w = pos / 32;
  const int off = static_cast<int>(pos % 32);
  uint64_t v = words[w * stride] >> off;
  if (off + bits > 32) v |= static_cast<uint64_t>(words[(w + 1) * stride]) << (32 - off);
  return static_cast<uint32_t>(v) & ((1u << bits) - 1);
}

}  // namespace

absl::StatusOr<std::vector<int32_t>> PackRows(const std::vector<uint8_t>& values, int64_t rows,
                                              int64_t cols, int bits) {
  if (auto s = CheckPackable(rows, bits, "a column"); !s.ok()) return s;
  std::vector<uint32_t> out(rows * bits / 32 * cols, 0);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      uint32_t v = values[r * cols + c];
      if (v >> bits) return absl::InvalidArgumentError(absl::StrCat("value ", v, " exceeds ", bits, " bits"));
      Put(out.data() + c, cols, r, bits, v);
    }
  }
  return std::vector<int32_t>(out.begin(), out.end());
}

absl::StatusOr<std::vector<uint8_t>> UnpackRows(const std::vector<int32_t>& packed, int64_t rows,
                                                int64_t cols, int bits) {
  if (auto s = CheckPackable(rows, bits, "a column"); !s.ok()) return s;
  if (static_cast<int64_t>(packed.size()) != rows * bits / 32 * cols) {
    return absl::InvalidArgumentError("packed size does not match the shape");
  }
  const uint32_t* words = reinterpret_cast<const uint32_t*>(packed.data());
  std::vector<uint8_t> out(rows * cols);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) out[r * cols + c] = Get(words + c, cols, r, bits);
  return out;
}

absl::StatusOr<std::vector<int32_t>> PackCols(const std::vector<uint8_t>& values, int64_t rows,
                                              int64_t cols, int bits) {
  if (auto s = CheckPackable(cols, bits, "a row"); !s.ok()) return s;
  const int64_t words_per_row = cols * bits / 32;
  std::vector<uint32_t> out(rows * words_per_row, 0);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      uint32_t v = values[r * cols + c];
      if (v >> bits) return absl::InvalidArgumentError(absl::StrCat("value ", v, " exceeds ", bits, " bits"));
      Put(out.data() + r * words_per_row, 1, c, bits, v);
    }
  }
  return std::vector<int32_t>(out.begin(), out.end());
}

absl::StatusOr<std::vector<uint8_t>> UnpackCols(const std::vector<int32_t>& packed, int64_t rows,
                                                int64_t cols, int bits) {
  if (auto s = CheckPackable(cols, bits, "a row"); !s.ok()) return s;
  const int64_t words_per_row = cols * bits / 32;
  if (static_cast<int64_t>(packed.size()) != rows * words_per_row) {
    return absl::InvalidArgumentError("packed size does not match the shape");
  }
  const uint32_t* words = reinterpret_cast<const uint32_t*>(packed.data());
  std::vector<uint8_t> out(rows * cols);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) out[r * cols + c] = Get(words + r * words_per_row, 1, c, bits);
  return out;
}

}  // namespace ptq::gptq
