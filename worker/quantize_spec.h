// The API's job description (ptq.v1.JobSpec) and QuantizeOptions, converted both ways by the names
// core/pipeline/quantize_options.h gives every option (protobuf reflection, no per-field code), so
// `ptq submit` and `ptq quantize` share one flag parser and a submitted job runs exactly the options
// the same command line would run in process. No LibTorch: the coordinator and the client use it.
#pragma once

#include "absl/status/status.h"
#include "core/pipeline/quantize_options.h"
#include "ptq/v1/job.pb.h"

namespace ptq::worker {

// Every field set explicitly (optional fields included), so the spec does not depend on the
// receiver's defaults.
v1::JobSpec SpecFromQuantizeOptions(const QuantizeOptions& options);

// Unset optional fields and empty strings take QuantizeOptions' defaults.
QuantizeOptions QuantizeOptionsFromSpec(const v1::JobSpec& spec);

// What can be checked before running: required paths given and present, no model already at the
// output path unless forced, and the options valid for the model's config (ValidateQuantizeOptions).
// Every failure is InvalidArgument with one readable line naming the field, e.g.
// "model_path /x: no config.json".
absl::Status ValidateQuantizeSpec(const v1::JobSpec& spec);

}  // namespace ptq::worker
