// How many bytes a job's checkpoint will take, estimated before any work so a job that cannot fit on
// the output disk fails at once (issue 9) instead of after hours of quantization. Linear layers'
// weights shrink to `bits` per weight plus a scale and zero per group; every other tensor is copied.
// Errs on the large side (by the margin below), never on the small.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "common/model_config.h"
#include "common/model_files.h"

namespace ptq {

// `dequantized`: the float32 model format (every tensor 4 bytes per element).
absl::StatusOr<uint64_t> EstimateCheckpointBytes(const std::string& model_dir,
                                                 const ModelFiles& files, const ModelConfig& config,
                                                 int bits, int64_t group_size, bool dequantized);

}  // namespace ptq
