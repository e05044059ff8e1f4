// libFuzzer target: decoding a GPTQ checkpoint's packed tensors (qweight packs down columns, qzeros
// along rows) with shapes and bit widths a file may lie about. Must never crash or read out of
// bounds; whatever decodes must re-pack to the same words.
#include <cstdint>
#include <cstring>
#include <vector>

#include "common/gptq_format.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 6) return 0;
  // Header: bits, rows (2 bytes), cols (2 bytes), which packing; the rest is the packed int32 words.
  const int bits = data[0] % 10;
  const int64_t rows = (data[1] | (data[2] << 8)) % 4097;
  const int64_t cols = (data[3] | (data[4] << 8)) % 4097;
  const bool along_rows = data[5] & 1;
  std::vector<int32_t> packed((size - 6) / 4);
  if (!packed.empty()) std::memcpy(packed.data(), data + 6, packed.size() * 4);
  auto values = along_rows ? ptq::gptq::UnpackRows(packed, rows, cols, bits)
                           : ptq::gptq::UnpackCols(packed, rows, cols, bits);
  if (!values.ok()) return 0;
  if (static_cast<int64_t>(values->size()) != rows * cols) __builtin_trap();
  for (uint8_t v : *values) {
    if (v >= (1u << bits)) __builtin_trap();
  }
  auto again = along_rows ? ptq::gptq::PackRows(*values, rows, cols, bits)
                          : ptq::gptq::PackCols(*values, rows, cols, bits);
  if (!again.ok()) __builtin_trap();
  // 3-bit packing spreads values over word boundaries, so only the bits that carry values compare.
  if (bits != 3 && *again != packed) __builtin_trap();
  return 0;
}
