// Runs the built `ptq` binary with a command line, as a user would, and returns its exit code and
// output: shared by the CLI tests.
#pragma once

#include <sys/wait.h>

#include <cstdio>
#include <string>

namespace ptq::testing {

struct CliRun {
  int exit_code;
  std::string out;
};

// stdout, and stderr too when `stderr_too`.
inline CliRun RunPtq(const std::string& args, bool stderr_too) {
  std::string cmd = std::string(PTQ_BINARY_DIR) + "/ptq " + args + (stderr_too ? " 2>&1" : " 2>/dev/null");
  FILE* pipe = ::popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), pipe)) > 0) out.append(buf, n);
  int status = ::pclose(pipe);
  return {WEXITSTATUS(status), out};
}

}  // namespace ptq::testing
