// Helpers for the JobService API (job states, stream metadata), shared by the coordinator and the
// `ptq` client.
#pragma once

#include <string>

#include "ptq/v1/job.pb.h"

namespace ptq::v1 {

// SUCCEEDED, FAILED or CANCELLED: the job will not change again.
bool IsFinished(JobState state);
// "QUEUED", "RUNNING", ... ("STATE_<n>" for a value this build does not know).
std::string StateName(JobState state);

// The initial-metadata key a Watch stream carries once it is set up, before its first event: the
// client's cue that it reached the coordinator again.
inline constexpr char kWatchReadyMetadataKey[] = "ptq-stream";

}  // namespace ptq::v1
