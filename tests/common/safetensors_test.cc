#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "common/dtype.h"
#include "common/safetensors_reader.h"
#include "common/safetensors_writer.h"

namespace ptq {
namespace {

std::string TempPath(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("ptq_safetensors_test_" + name)).string();
}

void WriteRaw(const std::string& path, const std::string& header, size_t data_bytes) {
  std::ofstream out(path, std::ios::binary);
  uint64_t len = header.size();
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>(len >> (8 * i)));
  out << header;
  out << std::string(data_bytes, '\0');
}

TEST(SafetensorsTest, WriterThenReaderRoundTripsEveryByte) {
  SafetensorsWriter writer;
  std::vector<float> a = {1.5f, -2.25f, 3.0f, 0.0f, 7.0f, -1e-3f};
  std::vector<uint8_t> a_bytes(a.size() * 4);
  std::memcpy(a_bytes.data(), a.data(), a_bytes.size());
  ASSERT_TRUE(writer.AddTensor("a", DType::kF32, {2, 3}, a_bytes).ok());
  std::vector<uint8_t> b_bytes = {1, 2, 3, 4, 5, 6};
  ASSERT_TRUE(writer.AddTensor("b.bf16", DType::kBF16, {3}, b_bytes).ok());
  writer.SetMetadata("format", "pt");
  const std::string path = TempPath("roundtrip.safetensors");
  ASSERT_TRUE(writer.Finish(path).ok());
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));

  auto reader = SafetensorsReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->metadata().at("format"), "pt");
  auto va = (*reader)->Get("a");
  ASSERT_TRUE(va.ok());
  EXPECT_EQ(va->dtype, DType::kF32);
  EXPECT_EQ(va->shape, (std::vector<int64_t>{2, 3}));
  ASSERT_EQ(va->num_bytes, a_bytes.size());
  EXPECT_EQ(std::memcmp(va->data, a_bytes.data(), a_bytes.size()), 0);
  auto vb = (*reader)->Get("b.bf16");
  ASSERT_TRUE(vb.ok());
  EXPECT_EQ(std::vector<uint8_t>(vb->data, vb->data + vb->num_bytes), b_bytes);
  EXPECT_FALSE((*reader)->Get("missing").ok());
}

TEST(SafetensorsTest, WriterRejectsSizeMismatchAndDuplicates) {
  SafetensorsWriter writer;
  EXPECT_FALSE(writer.AddTensor("x", DType::kF32, {2}, std::vector<uint8_t>(7)).ok());
  ASSERT_TRUE(writer.AddTensor("x", DType::kF32, {2}, std::vector<uint8_t>(8)).ok());
  EXPECT_FALSE(writer.AddTensor("x", DType::kF32, {2}, std::vector<uint8_t>(8)).ok());
}

struct CorruptCase {
  const char* name;
  std::string header;
  size_t data_bytes;
  const char* expected_words;
};

TEST(SafetensorsTest, CorruptHeadersAreRejectedWithAClearMessage) {
  const CorruptCase cases[] = {
      {"not_json", "{\"a\": ", 0, "not valid JSON"},
      {"past_end", R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8, "past the data"},
      {"size_mismatch", R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", 16,
       "dtype x shape"},
      {"overlap",
       R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
       16, "overlap"},
      {"bad_dtype", R"({"a":{"dtype":"F7","shape":[1],"data_offsets":[0,1]}})", 1, "dtype"},
      {"negative_dim", R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4, "shape"},
      {"reversed", R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}})", 4, "before begin"},
      {"no_offsets", R"({"a":{"dtype":"F32","shape":[1]}})", 4, "data_offsets"},
  };
  for (const auto& c : cases) {
    const std::string path = TempPath(std::string(c.name) + ".safetensors");
    WriteRaw(path, c.header, c.data_bytes);
    auto reader = SafetensorsReader::Open(path);
    ASSERT_FALSE(reader.ok()) << c.name;
    EXPECT_EQ(reader.status().code(), absl::StatusCode::kDataLoss) << c.name;
    EXPECT_NE(std::string(reader.status().message()).find(c.expected_words), std::string::npos)
        << c.name << ": " << reader.status();
  }
}

TEST(SafetensorsTest, HeaderLengthBeyondTheFileIsRejected) {
  const std::string path = TempPath("long_header.safetensors");
  {
    std::ofstream out(path, std::ios::binary);
    uint64_t len = 1000;
    for (int i = 0; i < 8; ++i) out.put(static_cast<char>(len >> (8 * i)));
    out << "{}";
  }
  auto reader = SafetensorsReader::Open(path);
  ASSERT_FALSE(reader.ok());
  EXPECT_NE(std::string(reader.status().message()).find("past the end"), std::string::npos);
  EXPECT_FALSE(SafetensorsReader::Open(TempPath("does_not_exist")).ok());
}

TEST(DTypeTest, HalfAndBFloat16ConversionsMatchIeeeValues) {
  // Bit patterns from the IEEE 754 binary16 tables.
  EXPECT_EQ(FloatToHalf(1.0f), 0x3c00);
  EXPECT_EQ(FloatToHalf(-2.0f), 0xc000);
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7bff);
  EXPECT_EQ(FloatToHalf(1e6f), 0x7c00);                 // overflow to infinity
  EXPECT_EQ(FloatToHalf(5.9604645e-8f), 0x0001);        // smallest subnormal
  EXPECT_EQ(FloatToHalf(6.103515625e-05f), 0x0400);     // smallest normal
  EXPECT_EQ(FloatToHalf(1.0f + 1.0f / 2048), 0x3c00);   // tie rounds to even
  EXPECT_EQ(FloatToHalf(1.0f + 3.0f / 2048), 0x3c02);   // tie rounds to even (up)
  EXPECT_FLOAT_EQ(HalfToFloat(0x3555), 0.333251953125f);
  EXPECT_FLOAT_EQ(HalfToFloat(0x0001), 5.9604645e-8f);
  EXPECT_EQ(FloatToBFloat16(1.0f), 0x3f80);
  EXPECT_FLOAT_EQ(BFloat16ToFloat(0xc0490fdb >> 16), -3.140625f);
  // Every half value survives half -> float -> half.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0) continue;  // NaNs
    ASSERT_EQ(FloatToHalf(HalfToFloat(static_cast<uint16_t>(h))), h) << std::hex << h;
  }
}

}  // namespace
}  // namespace ptq
