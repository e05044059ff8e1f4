#include "proto/ptq/v1/job_state.h"

#include <string_view>

namespace ptq::v1 {

bool IsFinished(JobState state) {
  return state == JOB_STATE_SUCCEEDED || state == JOB_STATE_FAILED || state == JOB_STATE_CANCELLED;
}

std::string StateName(JobState state) {
  std::string name = JobState_Name(state);
  constexpr std::string_view kPrefix = "JOB_STATE_";
  if (name.rfind(kPrefix, 0) == 0) name = name.substr(kPrefix.size());
  return name.empty() ? "STATE_" + std::to_string(static_cast<int>(state)) : name;
}

}  // namespace ptq::v1
