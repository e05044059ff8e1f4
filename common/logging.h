// Process-wide logging set-up (spdlog, to stderr). Call once from main.
#pragma once

#include <string>

namespace ptq {

// level: "debug", "info", "warn", "error".
void InitLogging(const std::string& level);

}  // namespace ptq
