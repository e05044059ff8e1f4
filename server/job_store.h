// Where the coordinator keeps its jobs: every job's spec, state, progress, result, log lines and
// watch events, surviving a coordinator restart. Implemented by SqliteJobStore (server/sqlite_job_store.h).
//
// Thread safety: implementations may be called from any thread.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ptq/v1/job.pb.h"

namespace ptq::server {

class JobStore {
 public:
  virtual ~JobStore() = default;

  // Adds a new job; AlreadyExists when its id is taken.
  virtual absl::Status Insert(const v1::Job& job) = 0;
  // Replaces the stored job with the same id; NotFound when there is none. Atomic: a reader sees
  // the old job or the new one.
  virtual absl::Status Update(const v1::Job& job) = 0;
  // NotFound when there is no job `id`.
  virtual absl::StatusOr<v1::Job> Get(const std::string& id) = 0;
  // All jobs in the order they were inserted.
  virtual absl::StatusOr<std::vector<v1::Job>> List() = 0;
  // Number of jobs in each state (states without jobs are absent).
  virtual absl::StatusOr<std::map<v1::JobState, int64_t>> CountByState() = 0;

  // Appends a line to job `id`'s log.
  virtual absl::Status AppendLog(const std::string& id, const v1::LogLine& line) = 0;
  // Job `id`'s log lines in order, from the `first`-th (0-based) on.
  virtual absl::StatusOr<std::vector<v1::LogLine>> Logs(const std::string& id, int64_t first) = 0;

  // Appends `event` to its job's event stream (event.job_id()) and returns the sequence it gets:
  // one more than the job's last (1 for its first). The event's own `sequence` is ignored.
  virtual absl::StatusOr<int64_t> AppendEvent(const v1::JobEvent& event) = 0;
  // Job `id`'s events whose sequence is greater than `after`, in order, `sequence` set.
  virtual absl::StatusOr<std::vector<v1::JobEvent>> Events(const std::string& id, int64_t after) = 0;
  // The sequence of job `id`'s last event; 0 when it has none.
  virtual absl::StatusOr<int64_t> LastEventSequence(const std::string& id) = 0;
};

}  // namespace ptq::server
