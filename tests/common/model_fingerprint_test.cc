// ModelFingerprint: equal for equal folders (also a copy elsewhere), different when config.json or a
// safetensors header changes, clear errors for a folder that is not a model.
#include "common/model_fingerprint.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "tests/test_paths.h"

namespace ptq {
namespace {

namespace fs = std::filesystem;

fs::path CopyOfDemo(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / ("ptq_fingerprint_test_" + name);
  fs::remove_all(dir);
  fs::copy(testing::DemoModelDir(), dir, fs::copy_options::recursive);
  return dir;
}

TEST(ModelFingerprintTest, SameModelSameFingerprintAndChangesAreSeen) {
  auto original = ModelFingerprint(testing::DemoModelDir());
  ASSERT_TRUE(original.ok()) << original.status();
  EXPECT_EQ(original->size(), 16u);
  const fs::path copy = CopyOfDemo("copy");
  EXPECT_EQ(*ModelFingerprint(copy.string()), *original);

  // Another config (one more space) is another model view.
  { std::ofstream(copy / "config.json", std::ios::app) << " "; }
  EXPECT_NE(*ModelFingerprint(copy.string()), *original);

  // A changed safetensors header (first byte of its JSON) too.
  const fs::path other = CopyOfDemo("header");
  {
    std::fstream f(other / "model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(8);
    f.put(' ');
  }
  EXPECT_NE(*ModelFingerprint(other.string()), *original);
  fs::remove_all(copy);
  fs::remove_all(other);
}

TEST(ModelFingerprintTest, NotAModelIsAClearError) {
  const fs::path empty = fs::temp_directory_path() / "ptq_fingerprint_test_empty";
  fs::create_directories(empty);
  auto missing = ModelFingerprint(empty.string());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("config.json"), std::string::npos);

  const fs::path truncated = CopyOfDemo("truncated");
  fs::resize_file(truncated / "model.safetensors", 12);
  auto bad = ModelFingerprint(truncated.string());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(bad.status().message().find("model.safetensors"), std::string::npos);
  fs::remove_all(truncated);
  fs::remove_all(empty);
}

}  // namespace
}  // namespace ptq
