#include "common/access_tokens.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace ptq {
namespace {

// Constant-time equality for the length of `expected` (the configured token): the loop runs over
// every byte whatever the input, and a length mismatch is folded into the result.
bool ConstantTimeEquals(const std::string& given, const std::string& expected) {
  unsigned char diff = given.size() == expected.size() ? 0 : 1;
  for (size_t i = 0; i < expected.size(); ++i) {
    const unsigned char g = i < given.size() ? static_cast<unsigned char>(given[i]) : 0;
    diff |= static_cast<unsigned char>(g ^ static_cast<unsigned char>(expected[i]));
  }
  return diff == 0;
}

}  // namespace

absl::StatusOr<AccessTokens> AccessTokens::Parse(const std::string& text, const std::string& source) {
  AccessTokens tokens;
  std::istringstream lines(text);
  std::string line;
  for (int number = 1; std::getline(lines, line); ++number) {
    const size_t hash = line.find('#');
    if (hash != std::string::npos) line.resize(hash);
    std::istringstream fields(line);
    std::string token, role, extra;
    if (!(fields >> token)) continue;
    if (!(fields >> role) || (fields >> extra)) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ":", number, ": expected `TOKEN ROLE` (role admin, read or worker)"));
    }
    if (token.size() < 16) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ":", number, ": token shorter than 16 characters"));
    }
    AccessRole parsed;
    if (role == "admin") {
      parsed = AccessRole::kAdmin;
    } else if (role == "read") {
      parsed = AccessRole::kRead;
    } else if (role == "worker") {
      parsed = AccessRole::kWorker;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(source, ":", number, ": unknown role '", role,
                                                     "' (admin, read or worker)"));
    }
    tokens.entries_.push_back({token, parsed});
  }
  if (tokens.entries_.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": no tokens"));
  }
  return tokens;
}

absl::StatusOr<AccessTokens> AccessTokens::Load(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read token file ", path));
  std::stringstream text;
  text << in.rdbuf();
  return Parse(text.str(), path);
}

absl::StatusOr<AccessRole> AccessTokens::Authenticate(const std::string& authorization) const {
  const std::string prefix = "Bearer ";
  if (authorization.compare(0, prefix.size(), prefix) != 0) {
    return absl::UnauthenticatedError("a bearer token is required (ptq --token or PTQ_TOKEN)");
  }
  const std::string given = authorization.substr(prefix.size());
  bool found = false;
  AccessRole role = AccessRole::kRead;
  for (const Entry& e : entries_) {  // no early exit
    const bool match = ConstantTimeEquals(given, e.token);
    if (match && !found) role = e.role;
    found |= match;
  }
  if (!found) return absl::UnauthenticatedError("the bearer token is not valid");
  return role;
}

absl::Status AccessTokens::Authorize(AccessRole role, bool write) {
  if (write && role != AccessRole::kAdmin) {
    return absl::PermissionDeniedError("this token may only read (get, list, watch, logs)");
  }
  return absl::OkStatus();
}

absl::Status AccessTokens::AuthorizeWorker(AccessRole role) {
  if (role != AccessRole::kWorker && role != AccessRole::kAdmin) {
    return absl::PermissionDeniedError("the worker API needs a token with role worker (or admin)");
  }
  return absl::OkStatus();
}

}  // namespace ptq
