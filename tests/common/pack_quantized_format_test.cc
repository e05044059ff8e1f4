// compressed-tensors pack-quantized packing against compressed-tensors 0.18.0's own pack_to_int32
// (compressors/pack_quantized/helpers.py), transcribed below: 32 values per group of num_bits
// words, each value added at bit_starts = i * num_bits of word bit_starts / 32, its overflow into the
// next word, the row padded to 32 values and the words truncated to ceil(cols * num_bits / 32).
// Also a hand-computed 3-bit word, and agreement with the GPTQ bit stream where both apply.
#include <gtest/gtest.h>

#include <random>

#include "common/gptq_format.h"
#include "common/pack_quantized_format.h"

namespace ptq::pack_quantized {
namespace {

// pack_to_int32 for one row of unsigned values (value + offset, as the Python adds before packing).
std::vector<int32_t> CompressedTensorsPackRow(std::vector<int32_t> value, int num_bits) {
  const int64_t cols = static_cast<int64_t>(value.size());
  const int64_t packed_cols = (cols * num_bits + 31) / 32;             // math.ceil(cols*num_bits/32)
  const int64_t padded_cols = (cols + 31) / 32 * 32;
  value.resize(padded_cols, 0);                                         // F.pad
  const int64_t num_groups = padded_cols / 32;
  std::vector<int32_t> output(num_groups * num_bits, 0);
  for (int64_t g = 0; g < num_groups; ++g) {
    for (int elem_i = 0; elem_i < 32; ++elem_i) {
      const int32_t v = value[g * 32 + elem_i];
      const int bit_starts = elem_i * num_bits;
      const int word_idx = bit_starts / 32;
      const int bit_offset = bit_starts % 32;
      output[g * num_bits + word_idx] += static_cast<int32_t>(static_cast<uint32_t>(v) << bit_offset);
      const int ov = bit_offset + num_bits - 32;
      if (ov > 0) output[g * num_bits + word_idx + 1] += v >> (num_bits - ov);  // scatter_add_ of ov_vals
    }
  }
  output.resize(packed_cols);  // [:, :packed_cols]
  return output;
}

TEST(PackQuantizedFormatTest, MatchesCompressedTensorsPackToInt32) {
  std::mt19937 rng(7);
  for (int bits = 1; bits <= 8; ++bits) {
    for (int64_t cols : {1, 31, 32, 33, 100, 704}) {
      const int64_t rows = 5;
      std::vector<uint8_t> values(rows * cols);
      for (auto& v : values) v = static_cast<uint8_t>(rng() % (1u << bits));
      auto packed = PackRows(values, rows, cols, bits);
      ASSERT_TRUE(packed.ok()) << packed.status();
      const int64_t words = PackedWords(cols, bits);
      ASSERT_EQ(static_cast<int64_t>(packed->size()), rows * words);
      for (int64_t r = 0; r < rows; ++r) {
        std::vector<int32_t> row(values.begin() + r * cols, values.begin() + (r + 1) * cols);
        std::vector<int32_t> expected = CompressedTensorsPackRow(row, bits);
        std::vector<int32_t> got(packed->begin() + r * words, packed->begin() + (r + 1) * words);
        EXPECT_EQ(got, expected) << "bits " << bits << " cols " << cols << " row " << r;
      }
      auto unpacked = UnpackRows(*packed, rows, cols, bits);
      ASSERT_TRUE(unpacked.ok());
      EXPECT_EQ(*unpacked, values) << "bits " << bits << " cols " << cols;
    }
  }
}

TEST(PackQuantizedFormatTest, ThreeBitWordByHand) {
  // Values 1,2,3,4,5,6,7,0,1,2 fill bits 0-29; the 11th (3 = 0b011) puts its low two bits in 30-31
  // and its high bit (0) in the next word.
  auto packed = PackRows({1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3}, 1, 11, 3);
  ASSERT_TRUE(packed.ok());
  EXPECT_EQ(*packed, (std::vector<int32_t>{static_cast<int32_t>(0xd11f58d1u), 0}));
}

TEST(PackQuantizedFormatTest, SameBitStreamAsGptqWhereBothApply) {
  std::mt19937 rng(3);
  for (int bits : {2, 3, 4, 8}) {
    const int64_t rows = 3, cols = 96;
    std::vector<uint8_t> values(rows * cols);
    for (auto& v : values) v = static_cast<uint8_t>(rng() % (1u << bits));
    EXPECT_EQ(*PackRows(values, rows, cols, bits), *gptq::PackCols(values, rows, cols, bits));
  }
}

TEST(PackQuantizedFormatTest, RejectsBadInput) {
  EXPECT_FALSE(PackRows({8}, 1, 1, 3).ok());     // exceeds 3 bits
  EXPECT_FALSE(PackRows({1, 2}, 1, 3, 4).ok());  // shape mismatch
  EXPECT_FALSE(PackRows({1}, 1, 1, 9).ok());
  EXPECT_FALSE(UnpackRows({0}, 1, 40, 4).ok());  // 40 values at 4 bits need 5 words
}

}  // namespace
}  // namespace ptq::pack_quantized
