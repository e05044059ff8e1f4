// How every `ptq` command reports an error: one line on stderr, exit code 1.
#pragma once

#include <cstdio>
#include <string>

#include "absl/status/status.h"

namespace ptq::client {

inline constexpr int kExitError = 1;

inline int Fail(const absl::Status& status) {
  std::fprintf(stderr, "ptq: error: %s\n", std::string(status.message()).c_str());
  return kExitError;
}

}  // namespace ptq::client
