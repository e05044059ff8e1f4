// Runs a job the API describes (ptq.v1.JobSpec) with the quantization core, and reports its progress
// and result as the API's messages: what the coordinator's embedded worker and ptq-worker share.
#pragma once

#include "absl/status/statusor.h"
#include "core/pipeline/quantize_pipeline.h"
#include "ptq/v1/job.pb.h"

namespace ptq::worker {

// Runs the job `spec` describes (RunQuantize) on `device` (this process's: the job does not say
// where it runs): a LibTorch exception becomes an error, and a run that did not finish (failed,
// cancelled) leaves no staging folder behind.
absl::StatusOr<QuantizeReport> RunQuantizeSpec(const v1::JobSpec& spec, const JobHooks& hooks,
                                               const std::string& device = "cpu");

// The pipeline's report and progress as the API's messages (JobResult, LayerProgress events).
v1::JobResult JobResultFromReport(const QuantizeReport& report);
v1::LayerProgress LayerProgressToProto(const LayerProgress& progress);

}  // namespace ptq::worker
