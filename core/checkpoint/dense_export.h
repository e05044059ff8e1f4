// `ptq dequantize`: rewrites a quantized checkpoint (GPTQ or compressed-tensors pack-quantized, ours
// or anyone's) as an ordinary float32 Hugging Face model, each quantized linear dequantized by the
// same reader `ptq eval` uses. What a runtime without a quantized kernel loads, and what the
// consumer-reader test (tests/core/checkpoint/serving_formats_test.py) compares the consumers'
// unpacking with.
#pragma once

#include <string>

#include "absl/status/status.h"

namespace ptq {

// Writes `out_dir` (replaced only with `force`); nothing appears there unless the whole copy succeeds.
absl::Status WriteDenseCopy(const std::string& checkpoint_dir, const std::string& out_dir, bool force);

}  // namespace ptq
