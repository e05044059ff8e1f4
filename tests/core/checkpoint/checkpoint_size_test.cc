// The checkpoint-size estimate against checkpoints really written (it must never be below, and not
// far above), and the free-space refusal.
#include "core/checkpoint/checkpoint_size.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "common/model_config.h"
#include "tests/test_paths.h"
#include "core/checkpoint/output_folder.h"
#include "core/pipeline/quantize_pipeline.h"

namespace ptq {
namespace {

namespace fs = std::filesystem;

uint64_t FolderBytes(const std::string& dir) {
  uint64_t total = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) total += e.file_size();
  }
  return total;
}

TEST(CheckpointSizeTest, EstimateBoundsTheWrittenCheckpoint) {
  auto config = LoadModelConfig(testing::DemoModelDir());
  ASSERT_TRUE(config.ok());
  auto files = ModelFiles::Open(testing::DemoModelDir());
  ASSERT_TRUE(files.ok());
  struct Case {
    int bits;
    int64_t group;
    std::string format;
  };
  for (const Case& c : {Case{4, 64, "gptq"}, Case{2, 32, "gptq"}, Case{8, -1, "gptq"},
                        Case{4, 64, "dequantized"}}) {
    const std::string out = (fs::temp_directory_path() / "ptq_checkpoint_size_test").string();
    fs::remove_all(out);
    QuantizeOptions o;
    o.model_dir = testing::DemoModelDir();
    o.calib_path = testing::DemoCalibText();
    o.out_dir = out;
    o.method = "rtn";  // the size does not depend on the method
    o.samples = 2;
    o.seq_len = 32;
    o.gptq.grid.bits = c.bits;
    o.gptq.group_size = c.group;
    o.format = c.format;
    auto report = RunQuantize(o);
    ASSERT_TRUE(report.ok()) << report.status();
    auto estimate = EstimateCheckpointBytes(o.model_dir, **files, *config, c.bits, c.group,
                                            c.format == "dequantized");
    ASSERT_TRUE(estimate.ok());
    const uint64_t written = FolderBytes(out);
    const uint64_t margin = 16ull << 20;
    SCOPED_TRACE(::testing::Message() << "W" << c.bits << " g" << c.group << " " << c.format
                                      << ": estimate " << *estimate << ", written " << written);
    EXPECT_GE(*estimate, written);
    EXPECT_LE(*estimate - margin, written * 11 / 10 + 4096);  // within 10 % without the fixed margin
    fs::remove_all(out);
  }
}

TEST(CheckpointSizeTest, TooLittleFreeDiskIsRefusedNamingTheFolder) {
  const std::string out = (fs::temp_directory_path() / "ptq_checkpoint_space_test").string();
  {
    auto folder = OutputFolder::Prepare(out, /*force=*/false);
    ASSERT_TRUE(folder.ok());
    EXPECT_TRUE(folder->CheckFreeSpace(1 << 20).ok());
    absl::Status s = folder->CheckFreeSpace(1ull << 62);
    EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
    EXPECT_NE(s.message().find(out), std::string::npos) << s;
  }
  EXPECT_TRUE(StagingFolders(out).empty()) << "the refused run left its staging folder";
}

}  // namespace
}  // namespace ptq
