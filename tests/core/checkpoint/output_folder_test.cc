// The output folder's staging: each run owns its own folder, a run that stops removes only its own,
// leftovers are cleared only when no live run holds them, and only the latest run may commit.
#include "core/checkpoint/output_folder.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>

namespace ptq {
namespace {
namespace fs = std::filesystem;

std::string CleanOutput(const std::string& name) {
  const fs::path p = fs::temp_directory_path() / ("ptq_output_folder_test_" + name);
  fs::remove_all(p);
  for (const std::string& staging : StagingFolders(p.string())) fs::remove_all(staging);
  return p.string();
}

void WriteFile(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  return {std::istreambuf_iterator<char>(in), {}};
}

// What happened when the coordinator restarted a job: the abandoned attempt noticed its
// cancellation only after the new attempt had started writing, and its cleanup deleted the shared
// staging folder (the committed checkpoint lacked the blocks written before).
TEST(OutputFolderTest, AStoppedRunRemovesOnlyItsOwnStaging) {
  const std::string out = CleanOutput("two_runs");
  std::optional<OutputFolder> old_run, new_run;
  {
    auto a = OutputFolder::Prepare(out, /*force=*/false);
    ASSERT_TRUE(a.ok()) << a.status();
    old_run.emplace(std::move(*a));
    auto b = OutputFolder::Prepare(out, /*force=*/false);
    ASSERT_TRUE(b.ok()) << b.status();
    new_run.emplace(std::move(*b));
  }
  ASSERT_NE(old_run->staging_dir(), new_run->staging_dir());
  EXPECT_TRUE(fs::exists(old_run->staging_dir())) << "the second run cleared a live run's folder";
  WriteFile(new_run->staging_dir() + "/model.safetensors", "new");
  WriteFile(old_run->staging_dir() + "/model.safetensors", "old");
  const std::string old_staging = old_run->staging_dir();
  old_run.reset();  // the old attempt fails
  EXPECT_FALSE(fs::exists(old_staging));
  ASSERT_TRUE(fs::exists(new_run->staging_dir() + "/model.safetensors"));
  ASSERT_TRUE(new_run->Commit().ok());
  EXPECT_EQ(ReadFile(out + "/model.safetensors"), "new");
  EXPECT_TRUE(StagingFolders(out).empty());
  new_run.reset();  // after Commit, going out of scope must not touch the checkpoint
  EXPECT_EQ(ReadFile(out + "/model.safetensors"), "new");
  fs::remove_all(out);
}

TEST(OutputFolderTest, LeftoversOfStoppedRunsAreRemovedAndLiveOnesKept) {
  const std::string out = CleanOutput("leftovers");
  auto live = OutputFolder::Prepare(out, /*force=*/false);
  ASSERT_TRUE(live.ok()) << live.status();
  // A run killed with SIGKILL leaves its folder and no lock; so did the single name of old versions.
  fs::create_directories(out + ".partial-dead01/sub");
  fs::create_directories(out + ".partial");
  fs::create_directories(out + ".partially");  // not a staging name
  auto next = OutputFolder::Prepare(out, /*force=*/false);
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_FALSE(fs::exists(out + ".partial-dead01"));
  EXPECT_FALSE(fs::exists(out + ".partial"));
  EXPECT_TRUE(fs::exists(out + ".partially"));
  EXPECT_TRUE(fs::exists(live->staging_dir()));
  EXPECT_EQ(StagingFolders(out).size(), 2u);
  fs::remove_all(out + ".partially");
}

TEST(OutputFolderTest, CommitReplacesAModelOnlyWhenForced) {
  const std::string out = CleanOutput("force");
  fs::create_directories(out);
  WriteFile(out + "/config.json", "{}");
  auto refused = OutputFolder::Prepare(out, /*force=*/false);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_NE(refused.status().message().find(out), std::string::npos) << refused.status();
  auto forced = OutputFolder::Prepare(out, /*force=*/true);
  ASSERT_TRUE(forced.ok()) << forced.status();
  WriteFile(forced->staging_dir() + "/config.json", "new");
  EXPECT_EQ(ReadFile(out + "/config.json"), "{}") << "replaced before the new model was complete";
  ASSERT_TRUE(forced->Commit().ok());
  EXPECT_EQ(ReadFile(out + "/config.json"), "new");
  EXPECT_FALSE(fs::exists(out + ".old"));
  fs::remove_all(out);
}

// The rest of the coordinator-restart story: the abandoned attempt reaches its commit after the new
// attempt has started (or finished). It must neither replace the new checkpoint nor delete the
// block store the new attempt resumes from.
TEST(OutputFolderTest, OnlyTheLatestRunCommits) {
  const std::string out = CleanOutput("latest");
  const std::string blocks = out + ".blocks";
  fs::create_directories(blocks);
  auto old_run = OutputFolder::Prepare(out, /*force=*/true);
  ASSERT_TRUE(old_run.ok()) << old_run.status();
  auto new_run = OutputFolder::Prepare(out, /*force=*/true);
  ASSERT_TRUE(new_run.ok()) << new_run.status();
  WriteFile(old_run->staging_dir() + "/model.safetensors", "old");
  WriteFile(new_run->staging_dir() + "/model.safetensors", "new");

  const absl::Status refused = old_run->Commit({blocks});
  EXPECT_EQ(refused.code(), absl::StatusCode::kAborted) << refused;
  EXPECT_NE(refused.message().find(out), std::string::npos) << refused;
  EXPECT_FALSE(fs::exists(out)) << "the abandoned run committed";
  EXPECT_TRUE(fs::exists(blocks)) << "the abandoned run removed the new run's block store";
  EXPECT_TRUE(fs::exists(new_run->staging_dir() + "/model.safetensors"));

  ASSERT_TRUE(new_run->Commit({blocks}).ok());
  EXPECT_EQ(ReadFile(out + "/model.safetensors"), "new");
  EXPECT_FALSE(fs::exists(blocks));
  EXPECT_FALSE(fs::exists(OwnerFile(out))) << "a committed output keeps no claim";
  fs::remove_all(out);
}

TEST(OutputFolderTest, AnAbandonedRunCannotReplaceANewerCheckpoint) {
  const std::string out = CleanOutput("newer");
  auto old_run = OutputFolder::Prepare(out, /*force=*/true);
  ASSERT_TRUE(old_run.ok()) << old_run.status();
  auto new_run = OutputFolder::Prepare(out, /*force=*/true);
  ASSERT_TRUE(new_run.ok()) << new_run.status();
  WriteFile(new_run->staging_dir() + "/model.safetensors", "new");
  ASSERT_TRUE(new_run->Commit().ok());
  WriteFile(old_run->staging_dir() + "/model.safetensors", "old");
  EXPECT_EQ(old_run->Commit().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(ReadFile(out + "/model.safetensors"), "new");
  fs::remove_all(out);
}

TEST(OutputFolderTest, AFailedRunDropsItsClaimAndLeavesAnEarlierOnesAlone) {
  const std::string out = CleanOutput("claim");
  std::optional<OutputFolder> first, second;
  first.emplace(std::move(*OutputFolder::Prepare(out, /*force=*/false)));
  second.emplace(std::move(*OutputFolder::Prepare(out, /*force=*/false)));
  const std::string second_name = fs::path(second->staging_dir()).filename().string();
  EXPECT_EQ(ReadFile(OwnerFile(out)), second_name);
  first.reset();  // not the owner: the claim stays the second run's
  EXPECT_EQ(ReadFile(OwnerFile(out)), second_name);
  second.reset();
  EXPECT_FALSE(fs::exists(OwnerFile(out)));
}

}  // namespace
}  // namespace ptq
