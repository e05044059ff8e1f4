// Bearer-token access to the coordinator's API (issue 9). A token file holds one `TOKEN ROLE` per line
// (`#` starts a comment); ROLE is `admin` (everything), `read` (get, list, watch, logs) or `worker`
// (the WorkerService a ptq-worker calls, plus reading). Clients
// send `authorization: Bearer TOKEN`. Tokens are compared in constant time, and every configured token
// is compared on each check, so timing reveals neither a token's prefix nor which one matched.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ptq {

enum class AccessRole { kRead, kAdmin, kWorker };

class AccessTokens {
 public:
  // Reads a token file; an empty or unreadable file, a short token (< 16 characters) or an unknown
  // role is an error naming the line.
  static absl::StatusOr<AccessTokens> Load(const std::string& path);
  static absl::StatusOr<AccessTokens> Parse(const std::string& text, const std::string& source);

  // The role of the request with this `authorization` header value; UNAUTHENTICATED when the header
  // is missing, not a Bearer token, or unknown.
  absl::StatusOr<AccessRole> Authenticate(const std::string& authorization) const;
  // OK when `role` may do a `write` (submit, cancel) or read call; PERMISSION_DENIED otherwise.
  static absl::Status Authorize(AccessRole role, bool write);
  // OK for the worker and admin roles: they may call WorkerService.
  static absl::Status AuthorizeWorker(AccessRole role);

 private:
  struct Entry {
    std::string token;
    AccessRole role;
  };
  std::vector<Entry> entries_;
};

}  // namespace ptq
