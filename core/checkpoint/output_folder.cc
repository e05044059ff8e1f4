#include "core/checkpoint/output_folder.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "spdlog/spdlog.h"

namespace ptq {
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

fs::path NormalizedOutput(const std::string& final_dir) {
  std::error_code ec;
  fs::path p = fs::absolute(final_dir, ec).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  return p;
}

// "<name>.partial" is the single staging name of earlier versions; "<name>.partial-XXXXXX" one run's.
bool IsStagingName(const std::string& name, const std::string& output_name) {
  const std::string prefix = output_name + ".partial";
  return name == prefix || absl::StartsWith(name, prefix + "-");
}

// Removes the staging folders of `final_path` whose owner is gone: a live run holds an flock on its
// folder, which the kernel drops when the process dies. A folder whose lock cannot be taken (held,
// or a file system without flock) is left alone: deleting a live run's output is worse than a
// leftover.
void RemoveAbandonedStaging(const fs::path& final_path) {
  std::error_code ec;
  const std::string output_name = final_path.filename().string();
  for (const auto& entry : fs::directory_iterator(final_path.parent_path(), ec)) {
    const std::string name = entry.path().filename().string();
    if (!IsStagingName(name, output_name) || !entry.is_directory(ec)) continue;
    const int fd = ::open(entry.path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) continue;
    if (::flock(fd, LOCK_EX | LOCK_NB) == 0) {
      spdlog::info("removing {}, left by a run that stopped", entry.path().string());
      std::error_code rm;
      fs::remove_all(entry.path(), rm);
    }
    ::close(fd);
  }
}

// True when `fd` is still the folder at `path` (another run's cleanup may have removed it between
// mkdtemp and flock).
bool StillAt(int fd, const fs::path& path) {
  struct stat by_fd {}, by_path {};
  return ::fstat(fd, &by_fd) == 0 && ::stat(path.c_str(), &by_path) == 0 &&
         by_fd.st_dev == by_path.st_dev && by_fd.st_ino == by_path.st_ino;
}

// "<out>.owner" opened and flock'ed. A committing run unlinks the file under the lock, so a run
// that opened it just before must lock the file that is at the path now: hence the retry.
class OwnerLock {
 public:
  OwnerLock(const std::string& path, bool create) : path_(path) {
    for (int tries = 0; tries < 8 && fd_ < 0; ++tries) {
      const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0644);
      if (fd < 0) {
        error_ = errno;
        return;
      }
      if (::flock(fd, LOCK_EX) != 0) {  // no flock on this file system: the token still fences
        spdlog::warn("cannot lock {}: {}", path, std::strerror(errno));
      }
      if (StillAt(fd, path)) {
        fd_ = fd;
      } else {
        ::close(fd);
        if (!create) {
          error_ = ENOENT;
          return;
        }
      }
    }
  }
  ~OwnerLock() {
    if (fd_ >= 0) ::close(fd_);
  }
  OwnerLock(const OwnerLock&) = delete;
  OwnerLock& operator=(const OwnerLock&) = delete;

  bool ok() const { return fd_ >= 0; }
  int error() const { return error_; }
  std::string Read() const {
    char buf[512];
    const ssize_t n = ::pread(fd_, buf, sizeof buf, 0);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
  }
  bool Write(const std::string& owner) const {
    return ::ftruncate(fd_, 0) == 0 &&
           ::pwrite(fd_, owner.data(), owner.size(), 0) == static_cast<ssize_t>(owner.size()) &&
           ::fsync(fd_) == 0;
  }
  void Unlink() const { ::unlink(path_.c_str()); }

 private:
  std::string path_;
  int fd_ = -1;
  int error_ = 0;
};

std::string BaseName(const std::string& path) { return fs::path(path).filename().string(); }

}  // namespace

std::string OwnerFile(const std::string& final_dir) {
  return NormalizedOutput(final_dir).string() + ".owner";
}

absl::StatusOr<OutputFolder> OutputFolder::Prepare(const std::string& final_dir, bool force) {
  if (final_dir.empty()) return absl::InvalidArgumentError("no output folder given");
  const fs::path final_path = NormalizedOutput(final_dir);
  std::error_code ec;
  if (fs::exists(final_path, ec) && !fs::is_directory(final_path, ec)) {
    return absl::AlreadyExistsError(
        absl::StrCat("output ", final_path.string(), " exists and is not a folder"));
  }
  if (HoldsModel(final_path) && !force) {
    return absl::AlreadyExistsError(absl::StrCat("output folder ", final_path.string(),
                                                 " already holds a model (use --force to replace it)"));
  }
  fs::create_directories(final_path.parent_path(), ec);
  if (ec) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create ", final_path.parent_path().string(), ": ", ec.message()));
  }
  RemoveAbandonedStaging(final_path);
  for (int tries = 0; tries < 8; ++tries) {
    std::string pattern = final_path.string() + ".partial-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) {
      return absl::PermissionDeniedError(absl::StrCat("cannot create ", final_path.string(),
                                                      ".partial-*: ", std::strerror(errno)));
    }
    // mkdtemp makes it 0700; a checkpoint is read by other users (an inference server).
    ::chmod(pattern.c_str(), 0755);
    const int fd = ::open(pattern.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) continue;
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      // No flock here (some network file systems): the folder is still this run's alone, but a
      // later run cannot tell it from a leftover, so it will not clear it.
      spdlog::warn("cannot lock {}: {}", pattern, std::strerror(errno));
    }
    if (!StillAt(fd, pattern)) {
      ::close(fd);
      continue;
    }
    OutputFolder folder(final_path.string(), pattern, fd);
    // From now on this run is the one allowed to commit (an earlier one still running is not).
    OwnerLock claim(OwnerFile(folder.final_dir_), /*create=*/true);
    if (!claim.ok() || !claim.Write(BaseName(pattern))) {
      return absl::PermissionDeniedError(absl::StrCat(
          "cannot write ", OwnerFile(folder.final_dir_), ": ",
          std::strerror(claim.ok() ? errno : claim.error())));
    }
    return std::move(folder);
  }
  return absl::UnavailableError(
      absl::StrCat("cannot create a staging folder for ", final_path.string()));
}

OutputFolder::OutputFolder(OutputFolder&& other) noexcept
    : final_dir_(std::move(other.final_dir_)),
      staging_dir_(std::move(other.staging_dir_)),
      lock_fd_(other.lock_fd_) {
  other.lock_fd_ = -1;
  other.staging_dir_.clear();
}

OutputFolder& OutputFolder::operator=(OutputFolder&& other) noexcept {
  if (this != &other) {
    Release();
    final_dir_ = std::move(other.final_dir_);
    staging_dir_ = std::move(other.staging_dir_);
    lock_fd_ = other.lock_fd_;
    other.lock_fd_ = -1;
    other.staging_dir_.clear();
  }
  return *this;
}

OutputFolder::~OutputFolder() { Release(); }

void OutputFolder::Release() {
  if (!staging_dir_.empty()) {
    std::error_code ec;
    fs::remove_all(staging_dir_, ec);
    OwnerLock claim(OwnerFile(final_dir_), /*create=*/false);  // drop the claim if still ours
    if (claim.ok() && claim.Read() == BaseName(staging_dir_)) claim.Unlink();
  }
  if (lock_fd_ >= 0) ::close(lock_fd_);
  lock_fd_ = -1;
  staging_dir_.clear();
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

absl::Status OutputFolder::Commit(const std::vector<std::string>& obsolete) {
  if (staging_dir_.empty()) return absl::FailedPreconditionError("output folder already committed");
  // Held until the end: a later run cannot claim the output between the check and the rename.
  OwnerLock claim(OwnerFile(final_dir_), /*create=*/false);
  const std::string owner = claim.ok() ? claim.Read() : std::string();
  if (owner != BaseName(staging_dir_)) {
    return absl::AbortedError(absl::StrCat(
        "a later run took over ", final_dir_, " (", OwnerFile(final_dir_), " names ",
        owner.empty() ? std::string("no run") : owner, ", not ", BaseName(staging_dir_),
        "); this run's checkpoint is discarded"));
  }
  if (lock_fd_ >= 0) ::fsync(lock_fd_);
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
  staging_dir_.clear();  // it is the checkpoint now
  Release();
  if (!old.empty()) fs::remove_all(old, ec);
  for (const std::string& path : obsolete) fs::remove_all(path, ec);
  claim.Unlink();
  return absl::OkStatus();
}

std::vector<std::string> StagingFolders(const std::string& final_dir) {
  std::vector<std::string> found;
  const fs::path final_path = NormalizedOutput(final_dir);
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(final_path.parent_path(), ec)) {
    if (IsStagingName(entry.path().filename().string(), final_path.filename().string())) {
      found.push_back(entry.path().string());
    }
  }
  return found;
}

std::string BlockStoreDir(const std::string& output_dir) {
  std::error_code ec;
  fs::path p = fs::absolute(output_dir, ec).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  p += ".blocks";
  return p.string();
}

void RemoveBlockStore(const std::string& output_dir) {
  if (output_dir.empty()) return;
  std::error_code ec;
  fs::remove_all(BlockStoreDir(output_dir), ec);
}

}  // namespace ptq
