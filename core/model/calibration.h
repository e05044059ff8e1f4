// Calibration windows: N random windows of L consecutive tokens from a training text, chosen by a
// seeded generator so the same job picks the same windows everywhere.
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"

namespace ptq {

// Returns [num_windows, seq_len] int64 token ids.
absl::StatusOr<at::Tensor> SampleCalibrationWindows(const std::vector<int32_t>& tokens,
                                                    int64_t num_windows, int64_t seq_len,
                                                    uint64_t seed);

}  // namespace ptq
