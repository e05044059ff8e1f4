// qweight packing: the reference (common/gptq_format's PackRows) against the layout docs/formats.md
// states, read back bit by bit from the words, and the CUDA kernel against the reference.
#include "kernels/gptq_pack.h"

#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "tests/kernels/cuda_test_util.h"

namespace ptq::kernels {
namespace {

std::vector<uint8_t> RandomCodes(int64_t rows, int64_t cols, int bits, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(rows * cols);
  for (auto& x : v) x = static_cast<uint8_t>(rng() % (1u << bits));
  return v;
}

// docs/formats.md: input k of column n sits at bits [k b, k b + b) of the column's bit stream, word
// i holding stream bits 32 i .. 32 i + 31, least significant first.
uint32_t StreamBits(const std::vector<int32_t>& packed, int64_t cols, int64_t n, int64_t bit0,
                    int bits) {
  uint32_t v = 0;
  for (int b = 0; b < bits; ++b) {
    const int64_t bit = bit0 + b;
    const uint32_t word = static_cast<uint32_t>(packed[(bit / 32) * cols + n]);
    v |= ((word >> (bit % 32)) & 1u) << b;
  }
  return v;
}

TEST(GptqPackRefTest, FollowsTheDocumentedBitStream) {
  for (int bits : {2, 3, 4, 8}) {
    const int64_t rows = 128, cols = 7;
    std::vector<uint8_t> codes = RandomCodes(rows, cols, bits, bits);
    std::vector<int32_t> packed(rows * bits / 32 * cols, -1);
    GptqPackArgs a{rows, cols, codes.data(), bits, packed.data()};
    ASSERT_TRUE(GptqPackRef(a).ok());
    for (int64_t n = 0; n < cols; ++n)
      for (int64_t k = 0; k < rows; ++k)
        ASSERT_EQ(StreamBits(packed, cols, n, k * bits, bits), codes[k * cols + n])
            << "bits " << bits << " input " << k << " column " << n;
  }
}

TEST(GptqPackRefTest, ThreeBitWordsAsFormatsMdSpellsThem) {
  // 32 inputs of one column, value k = k % 8: word 0 holds values 0-9 and value 10's low 2 bits.
  std::vector<uint8_t> codes(32);
  for (int k = 0; k < 32; ++k) codes[k] = static_cast<uint8_t>(k % 8);
  std::vector<int32_t> packed(3);
  ASSERT_TRUE(GptqPackRef(GptqPackArgs{32, 1, codes.data(), 3, packed.data()}).ok());
  uint32_t w0 = 0, w1 = 0, w2 = 0;
  for (int k = 0; k < 10; ++k) w0 |= uint32_t(codes[k]) << (3 * k);
  w0 |= (uint32_t(codes[10]) & 3u) << 30;
  w1 |= uint32_t(codes[10]) >> 2;
  for (int k = 11; k < 21; ++k) w1 |= uint32_t(codes[k]) << (3 * (k - 11) + 1);
  w1 |= (uint32_t(codes[21]) & 1u) << 31;
  w2 |= uint32_t(codes[21]) >> 1;
  for (int k = 22; k < 32; ++k) w2 |= uint32_t(codes[k]) << (3 * (k - 22) + 2);
  EXPECT_EQ(static_cast<uint32_t>(packed[0]), w0);
  EXPECT_EQ(static_cast<uint32_t>(packed[1]), w1);
  EXPECT_EQ(static_cast<uint32_t>(packed[2]), w2);
}

TEST(GptqPackRefTest, RejectsBadShapesAndBits) {
  std::vector<uint8_t> codes(40);
  std::vector<int32_t> packed(40);
  EXPECT_EQ(GptqPackRef(GptqPackArgs{4, 1, codes.data(), 4, packed.data()}).code(),
            absl::StatusCode::kInvalidArgument);  // 4 * 4 bits is not a whole word
  EXPECT_EQ(GptqPackRef(GptqPackArgs{32, 1, codes.data(), 5, packed.data()}).code(),
            absl::StatusCode::kInvalidArgument);
}

#if defined(PTQ_HAVE_CUDA)
TEST(GptqPackCudaTest, MatchesReferenceOnRandomAndEdgeShapes) {
  if (std::string why = ptq::testing::CudaUnavailableReason(); !why.empty()) GTEST_SKIP() << why;
  struct Shape { int64_t rows, cols; int bits; };
  uint32_t seed = 30;
  for (Shape s : {Shape{8, 1, 4}, Shape{16, 3, 2}, Shape{4, 5, 8}, Shape{32, 1, 3}, Shape{96, 33, 3},
                  Shape{4096, 257, 4}, Shape{11008, 64, 2}, Shape{11008, 64, 3}, Shape{40, 9, 4}}) {
    SCOPED_TRACE(::testing::Message() << s.rows << "x" << s.cols << " bits " << s.bits);
    std::vector<uint8_t> codes = RandomCodes(s.rows, s.cols, s.bits, seed++);
    std::vector<int32_t> want(s.rows * s.bits / 32 * s.cols);
    ASSERT_TRUE(GptqPackRef(GptqPackArgs{s.rows, s.cols, codes.data(), s.bits, want.data()}).ok());
    ptq::testing::DeviceBuffer<uint8_t> dc(codes);
    ptq::testing::DeviceBuffer<int32_t> dp(std::vector<int32_t>(want.size(), 0));
    ptq::testing::TestStream stream;
    ASSERT_TRUE(GptqPackCuda(GptqPackArgs{s.rows, s.cols, dc.get(), s.bits, dp.get()}, stream.get()).ok());
    ASSERT_EQ(stream.Sync(), cudaSuccess);
    EXPECT_EQ(dp.Host(), want);
  }
}
#else
TEST(GptqPackCudaTest, MatchesReferenceOnRandomAndEdgeShapes) {
  GTEST_SKIP() << ptq::testing::CudaUnavailableReason();
}
#endif

}  // namespace
}  // namespace ptq::kernels
