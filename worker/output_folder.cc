#include "worker/output_folder.h"

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace ptq::worker {
namespace fs = std::filesystem;

namespace {

bool HoldsModel(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return false;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name == "config.json" || entry.path().extension() == ".safetensors") return true;
  }
  return false;
}

}  // namespace

absl::StatusOr<OutputFolder> OutputFolder::Prepare(const std::string& final_dir, bool force) {
  if (final_dir.empty()) return absl::InvalidArgumentError("no output folder given");
  fs::path final_path = fs::absolute(final_dir).lexically_normal();
  if (final_path.filename().empty()) final_path = final_path.parent_path();
  std::error_code ec;
  if (fs::exists(final_path, ec) && !fs::is_directory(final_path, ec)) {
    return absl::AlreadyExistsError(
        absl::StrCat("output ", final_path.string(), " exists and is not a folder"));
  }
  if (HoldsModel(final_path) && !force) {
    return absl::AlreadyExistsError(absl::StrCat("output folder ", final_path.string(),
                                                 " already holds a model (use --force to replace it)"));
  }
  fs::path staging = final_path;
  staging += ".partial";
  fs::remove_all(staging, ec);  // a leftover of an interrupted run
  fs::create_directories(staging, ec);
  if (ec) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create ", staging.string(), ": ", ec.message()));
  }
  return OutputFolder(final_path.string(), staging.string());
}

absl::Status OutputFolder::CheckFreeSpace(uint64_t bytes) const {
  std::error_code ec;
  const fs::space_info space = fs::space(staging_dir_, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot stat ", staging_dir_, ": ", ec.message()));
  if (space.available < bytes) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "not enough free disk for the checkpoint under %s: it needs about %.2f GiB, %.2f GiB are "
        "free", final_dir_, bytes / 1073741824.0, space.available / 1073741824.0));
  }
  return absl::OkStatus();
}

absl::Status OutputFolder::Commit() {
  int fd = ::open(staging_dir_.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
  std::error_code ec;
  fs::path old;
  if (fs::exists(final_dir_, ec)) {
    old = final_dir_ + ".old";
    fs::remove_all(old, ec);
    fs::rename(final_dir_, old, ec);
    if (ec) {
      return absl::UnavailableError(
          absl::StrCat("cannot move the previous ", final_dir_, " aside: ", ec.message()));
    }
  }
  fs::rename(staging_dir_, final_dir_, ec);
  if (ec) {
    return absl::UnavailableError(absl::StrCat("cannot rename ", staging_dir_, " to ", final_dir_,
                                               ": ", ec.message()));
  }
  if (!old.empty()) fs::remove_all(old, ec);
  return absl::OkStatus();
}

void RemoveStaging(const std::string& final_dir) {
  if (final_dir.empty()) return;
  std::error_code ec;
  std::filesystem::path staging = std::filesystem::absolute(final_dir, ec).lexically_normal();
  if (staging.filename().empty()) staging = staging.parent_path();
  staging += ".partial";
  std::filesystem::remove_all(staging, ec);
}

}  // namespace ptq::worker
