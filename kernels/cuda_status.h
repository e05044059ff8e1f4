// For the .cu launchers only: the launch's error (cudaGetLastError, which also reports an earlier
// asynchronous failure still pending on this thread) as an absl::Status.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "absl/status/status.h"

namespace ptq::kernels {

inline absl::Status LaunchStatus(const char* kernel) {
  const cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(std::string(kernel) + " launch failed: " + cudaGetErrorName(e) + " (" +
                             cudaGetErrorString(e) + ")");
}

inline absl::Status BadArguments(const char* kernel, const char* why) {
  return absl::InvalidArgumentError(std::string(kernel) + ": " + why);
}

}  // namespace ptq::kernels
