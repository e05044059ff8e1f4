// The API's job description (ptq.v1.JobSpec) and the pipeline's QuantizeOptions, converted both ways,
// so `ptq submit` and `ptq quantize` share one flag parser and a submitted job runs exactly the
// options the same command line would run in process. This is the worker's side of the RPC boundary:
// the one worker file that includes generated protobuf headers.
#pragma once

#include "absl/status/status.h"
#include "ptq/v1/job.pb.h"
#include "worker/quantize_pipeline.h"

namespace ptq::worker {

// Every field set explicitly (optional fields included), so the spec does not depend on the
// receiver's defaults.
v1::JobSpec SpecFromQuantizeOptions(const QuantizeOptions& options);

// Unset optional fields and empty strings take QuantizeOptions' defaults.
QuantizeOptions QuantizeOptionsFromSpec(const v1::JobSpec& spec);

// What can be checked before running: required paths given and present, no model already at the
// output path unless forced, and the options valid for the model's config (ValidateQuantizeOptions). Every failure is InvalidArgument with one readable
// line naming the field, e.g. "model_path /x: no config.json".
absl::Status ValidateQuantizeSpec(const v1::JobSpec& spec);

// Runs the job `spec` describes (RunQuantize): a LibTorch exception becomes an error, and a run that
// did not finish (failed, cancelled) leaves no staging folder behind.
absl::StatusOr<QuantizeReport> RunQuantizeSpec(const v1::JobSpec& spec, const JobHooks& hooks);

// The pipeline's report and progress as the API's messages (JobResult, LayerProgress events).
v1::JobResult JobResultFromReport(const QuantizeReport& report);
v1::LayerProgress LayerProgressToProto(const LayerProgress& progress);

}  // namespace ptq::worker
