// GPTQ integer packing against the packing loop every public GPTQ loader inherited: AutoGPTQ's
// QuantLinear.pack (auto_gptq/nn_modules/qlinear/qlinear_cuda_old.py; GPTQModel and vLLM's GPTQ
// tests use the same layout), transcribed below, and against the words docs/formats.md states.
#include <gtest/gtest.h>

#include <random>

#include "common/gptq_format.h"

namespace ptq::gptq {
namespace {

// AutoGPTQ's pack loop for one column of `intweight` (values along the input dimension).
std::vector<uint32_t> AutoGptqPackColumn(const std::vector<uint32_t>& intweight, int bits) {
  std::vector<uint32_t> qweight(intweight.size() * bits / 32, 0);
  size_t i = 0, row = 0;
  while (row < qweight.size()) {
    if (bits == 2 || bits == 4 || bits == 8) {
      for (size_t j = i; j < i + 32 / bits; ++j) qweight[row] |= intweight[j] << (bits * (j - i));
      i += 32 / bits;
      row += 1;
    } else {  // bits == 3
      for (size_t j = i; j < i + 10; ++j) qweight[row] |= intweight[j] << (3 * (j - i));
      i += 10;
      qweight[row] |= intweight[i] << 30;
      row += 1;
      qweight[row] |= (intweight[i] >> 2) & 1;
      i += 1;
      for (size_t j = i; j < i + 10; ++j) qweight[row] |= intweight[j] << (3 * (j - i) + 1);
      i += 10;
      qweight[row] |= intweight[i] << 31;
      row += 1;
      qweight[row] |= (intweight[i] >> 1) & 0x3;
      i += 1;
      for (size_t j = i; j < i + 10; ++j) qweight[row] |= intweight[j] << (3 * (j - i) + 2);
      i += 10;
      row += 1;
    }
  }
  return qweight;
}

TEST(GptqFormatTest, PackRowsMatchesAutoGptqPackLoop) {
  std::mt19937 rng(1);
  for (int bits : {2, 3, 4, 8}) {
    const int64_t rows = 96, cols = 5;
    std::vector<uint8_t> values(rows * cols);
    for (auto& v : values) v = static_cast<uint8_t>(rng() % (1u << bits));
    auto packed = PackRows(values, rows, cols, bits);
    ASSERT_TRUE(packed.ok()) << packed.status();
    for (int64_t c = 0; c < cols; ++c) {
      std::vector<uint32_t> column(rows);
      for (int64_t r = 0; r < rows; ++r) column[r] = values[r * cols + c];
      std::vector<uint32_t> expected = AutoGptqPackColumn(column, bits);
      for (size_t w = 0; w < expected.size(); ++w) {
        ASSERT_EQ(static_cast<uint32_t>((*packed)[w * cols + c]), expected[w])
            << "bits " << bits << " column " << c << " word " << w;
      }
    }
    auto back = UnpackRows(*packed, rows, cols, bits);
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, values);
  }
}

TEST(GptqFormatTest, SymmetricZeroWordsAreTheOnesFastKernelsAssume) {
  // Symmetric zero 2^(b-1) stored as zero - 1 (docs/formats.md). GPTQModel's
  // tests/test_packing.py (test_triton_compare_exllama) packs zeros of 8 at 4 bits and asserts that
  // its loaders' dequantize_weight reads every qzero back as 8, i.e. stored 7 in each nibble.
  const std::pair<int, uint32_t> cases[] = {{4, 0x77777777u}, {2, 0x55555555u}, {8, 0x7F7F7F7Fu}};
  for (const auto& [bits, word] : cases) {
    const int64_t n = 64;
    std::vector<uint8_t> stored(n, static_cast<uint8_t>((1 << (bits - 1)) - 1));
    auto packed = PackCols(stored, 1, n, bits);
    ASSERT_TRUE(packed.ok());
    for (int32_t w : *packed) EXPECT_EQ(static_cast<uint32_t>(w), word) << "bits " << bits;
  }
}

TEST(GptqFormatTest, ThreeBitValuesCrossWordsAsDocumented) {
  std::vector<uint8_t> values(32, 0);
  values[10] = 0b110;  // low 2 bits (10) in word 0 bits 30-31, high bit (1) in word 1 bit 0
  values[21] = 0b011;  // low bit (1) in word 1 bit 31, high 2 bits (01) in word 2 bits 0-1
  values[31] = 0b111;  // word 2 bits 29-31
  auto packed = PackCols(values, 1, 32, 3);
  ASSERT_TRUE(packed.ok());
  ASSERT_EQ(packed->size(), 3u);
  EXPECT_EQ(static_cast<uint32_t>((*packed)[0]), 0b10u << 30);
  EXPECT_EQ(static_cast<uint32_t>((*packed)[1]), (1u << 31) | 1u);
  EXPECT_EQ(static_cast<uint32_t>((*packed)[2]), (0b111u << 29) | 0b01u);
}

TEST(GptqFormatTest, RejectsShapesThatDoNotFillWordsAndOutOfRangeValues) {
  EXPECT_FALSE(PackRows(std::vector<uint8_t>(20, 0), 20, 1, 3).ok());  // 60 bits
  EXPECT_FALSE(PackCols(std::vector<uint8_t>(4, 0), 1, 4, 4).ok());    // 16 bits
  EXPECT_FALSE(PackRows(std::vector<uint8_t>(8, 0), 8, 1, 5).ok());
  std::vector<uint8_t> too_big(8, 0);
  too_big[3] = 16;
  EXPECT_FALSE(PackRows(too_big, 8, 1, 4).ok());
}

}  // namespace
}  // namespace ptq::gptq
