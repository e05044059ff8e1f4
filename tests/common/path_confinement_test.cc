// Path confinement: inside, outside, "..", relative paths, symlink escapes, not-yet-existing outputs.
#include <gtest/gtest.h>

#include <filesystem>

#include "common/path_confinement.h"

namespace ptq {
namespace {
namespace fs = std::filesystem;

TEST(PathConfinementTest, AcceptsPathsUnderARootAndRefusesEscapes) {
  const fs::path base = fs::temp_directory_path() / "ptq_confinement_test";
  fs::remove_all(base);
  fs::create_directories(base / "root/models");
  fs::create_directories(base / "elsewhere");
  fs::create_symlink(base / "elsewhere", base / "root/escape");
  fs::create_directories(base / "rootx");
  const std::vector<std::string> roots = {(base / "root").string()};
  auto code = [&](const fs::path& p) { return CheckPathUnderRoots(p.string(), roots, "model").code(); };

  EXPECT_EQ(code(base / "root/models"), absl::StatusCode::kOk);
  EXPECT_EQ(code(base / "root/out/new-checkpoint"), absl::StatusCode::kOk);  // does not exist yet
  EXPECT_EQ(code(base / "elsewhere"), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(code(base / "rootx"), absl::StatusCode::kPermissionDenied);  // a prefix, not a parent
  EXPECT_EQ(code(base / "root/../elsewhere"), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(code(base / "root/models/../models"), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(code(base / "root/escape"), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(code(base / "root/escape/new-output"), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(code("relative/path"), absl::StatusCode::kPermissionDenied);
  absl::Status s = CheckPathUnderRoots((base / "root/escape").string(), roots, "output");
  EXPECT_NE(std::string(s.message()).find("resolves to"), std::string::npos) << s;
  EXPECT_NE(std::string(s.message()).find("output"), std::string::npos) << s;
  // No roots configured: no confinement.
  EXPECT_TRUE(CheckPathUnderRoots("relative", {}, "model").ok());
  fs::remove_all(base);
}

}  // namespace
}  // namespace ptq
