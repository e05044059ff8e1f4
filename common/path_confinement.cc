#include "common/path_confinement.h"

#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"

namespace ptq {
namespace {
namespace fs = std::filesystem;

// The real location of `p`: symlinks resolved through the deepest existing ancestor, the rest
// appended (weakly_canonical does exactly that).
bool Resolve(const fs::path& p, fs::path* out) {
  std::error_code ec;
  *out = fs::weakly_canonical(p, ec);
  return !ec;
}

bool IsUnder(const fs::path& path, const fs::path& root) {
  auto r = root.begin(), p = path.begin();
  for (; r != root.end(); ++r, ++p) {
    if (r->empty()) continue;  // a trailing separator
    if (p == path.end() || *p != *r) return false;
  }
  return true;
}

}  // namespace

absl::Status CheckPathUnderRoots(const std::string& path, const std::vector<std::string>& roots,
                                 const std::string& what) {
  if (roots.empty()) return absl::OkStatus();
  auto denied = [&](const std::string& why) {
    return absl::PermissionDeniedError(absl::StrCat(what, " '", path, "' ", why));
  };
  const fs::path p(path);
  if (path.empty() || !p.is_absolute()) return denied("is not an absolute path");
  for (const auto& part : p) {
    if (part == "..") return denied("contains '..'");
  }
  fs::path real;
  if (!Resolve(p, &real)) return denied("cannot be resolved");
  for (const std::string& root : roots) {
    fs::path real_root;
    if (Resolve(fs::path(root), &real_root) && IsUnder(real, real_root)) return absl::OkStatus();
  }
  std::string list;
  for (const std::string& root : roots) absl::StrAppend(&list, list.empty() ? "" : ", ", root);
  return denied(absl::StrCat("is outside the allowed roots (", list, ")",
                             real != p ? absl::StrCat("; it resolves to ", real.string()) : ""));
}

}  // namespace ptq
