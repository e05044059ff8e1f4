// Where a job's tensor work runs (`--device cpu|cuda|cuda:N`). Weights stream to it block by block;
// hidden states, statistics and quantizers stay there; results come to the host at the sinks only.
#pragma once

#include <string>

#include <c10/core/Device.h>

#include "absl/status/statusor.h"

namespace ptq {

// The device `name` names, or an error naming what is missing: a CPU-only LibTorch, no visible GPU,
// or an index beyond the visible ones.
absl::StatusOr<c10::Device> ResolveDevice(const std::string& name);

}  // namespace ptq
