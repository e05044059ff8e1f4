// Helpers for the API's JobState, shared by the coordinator and the `ptq` client.
#pragma once

#include <string>

#include "ptq/v1/job.pb.h"

namespace ptq::v1 {

// SUCCEEDED, FAILED or CANCELLED: the job will not change again.
bool IsFinished(JobState state);
// "QUEUED", "RUNNING", ... ("STATE_<n>" for a value this build does not know).
std::string StateName(JobState state);

}  // namespace ptq::v1
