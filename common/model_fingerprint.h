// A cheap fingerprint of what a process sees at a model path: config.json's bytes and every
// *.safetensors file's name, size and header (not the tensor data: reading gigabytes to compare would
// cost more than the job). The coordinator sends its fingerprint with each assignment; a worker whose
// own differs (another model mounted at the same path, a half-copied file) refuses the assignment.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace ptq {

// 16 hex digits (FNV-1a 64 over the parts above, in file-name order); NotFound / DataLoss naming the
// file when the folder has no config.json or a safetensors header cannot be read.
absl::StatusOr<std::string> ModelFingerprint(const std::string& model_dir);

}  // namespace ptq
