// Runs the coordinator's jobs: a FIFO queue drained one job at a time by a runner thread that hands
// each job to a JobExecutor. Keeps every state change, the per-block progress and a log in the
// JobStore, publishes events to watchers through a JobEventHub, and exports the ptq_jobs{state}
// gauge.
//
// States: QUEUED -> RUNNING -> SUCCEEDED | FAILED | CANCELLED, or QUEUED -> CANCELLED.
//
// Recovery: Start re-queues jobs the store holds as RUNNING (the previous coordinator was killed
// or stopped mid-job), ahead of the jobs that were still queued. Their run resumes from the last
// finished block, which the pipeline keeps next to the output (core/checkpoint/block_store.h); the
// job's log says from which block once the run knows (blocks it reloads arrive as BlockProgress
// with `reloaded`). A job that ends cancelled has that folder removed; a failed one keeps it, so
// submitting it again resumes.
//
// Events: every event is appended to the store (which numbers it, JobEvent.sequence) before it is
// published, so a watcher that lost its stream, even to a coordinator restart, can be sent exactly
// the events it missed (StartWatch).
//
// Thread safety: every public method may be called from any thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "common/metrics.h"
#include "proto/ptq/v1/job_state.h"
#include "server/job_event_hub.h"
#include "server/job_executor.h"
#include "server/job_store.h"

namespace ptq::server {

using v1::IsFinished;
using v1::StateName;

class JobScheduler {
 public:
  // REQUIRES: store, executor and registry outlive the scheduler.
  JobScheduler(JobStore& store, JobExecutor& executor, metrics::Registry& registry);
  // Stops (see Stop).
  ~JobScheduler();
  JobScheduler(const JobScheduler&) = delete;
  JobScheduler& operator=(const JobScheduler&) = delete;

  // Re-queues interrupted jobs, queues the queued ones and starts the runner. Call once.
  absl::Status Start();
  // Interrupts the running job (it goes back to QUEUED, to restart on the next Start), stops the
  // runner and closes every watcher's stream. Idempotent.
  void Stop();

  // InvalidArgument (one readable line) for a spec the executor refuses.
  // `owner` identifies the submitter; with `max_queued_per_owner` > 0, RESOURCE_EXHAUSTED when that
  // many of its jobs are already queued.
  absl::StatusOr<v1::Job> Submit(const v1::JobSpec& spec, const std::string& owner = "",
                                 int max_queued_per_owner = 0);
  // NotFound for an unknown id.
  absl::StatusOr<v1::Job> Get(const std::string& id);
  // Oldest first.
  absl::StatusOr<std::vector<v1::Job>> List();
  // A queued job turns CANCELLED at once. A running one is asked to stop and is returned still
  // RUNNING; it turns CANCELLED when the executor stops at its next layer boundary (or finishes
  // normally if it was already past the last one). Cancelling a CANCELLED job returns it;
  // a SUCCEEDED or FAILED one is FailedPrecondition.
  absl::StatusOr<v1::Job> Cancel(const std::string& id);

  // The job's current state, the sequence of its last event, the stored events after
  // `after_sequence` (when given) and a subscription to every event after those, taken atomically.
  struct Watch {
    v1::Job job;
    int64_t last_sequence = 0;
    std::vector<v1::JobEvent> missed;  // sequence > after_sequence, in order
    std::unique_ptr<Subscription> events;
  };
  absl::StatusOr<Watch> StartWatch(const std::string& id,
                                   std::optional<int64_t> after_sequence = std::nullopt);
  // Job `id`'s log lines from the `first`-th on.
  absl::StatusOr<std::vector<v1::LogLine>> Logs(const std::string& id, int64_t first);

  bool stopping() const { return stopping_.load(); }

 private:
  void RunLoop();
  // `ran_before`: an earlier run of the job recorded progress (it was interrupted).
  void RunJob(v1::Job job, bool ran_before);
  // The following REQUIRE mu_ held.
  absl::StatusOr<v1::Job> GetLocked(const std::string& id);
  void SaveAndPublish(const v1::Job& job);  // store, state event, gauge
  void Publish(v1::JobEvent event);          // numbered by the store, then to the watchers
  void Log(const std::string& id, const std::string& text);
  void UpdateGauge();
  std::string NewId();

  JobStore& store_;
  JobExecutor& executor_;
  metrics::Registry& registry_;
  JobEventHub hub_;

  std::mutex mu_;
  std::condition_variable queue_ready_;
  std::deque<std::string> queue_;          // ids of QUEUED jobs, FIFO
  // Submitters of jobs queued since this start (per-client limits; not kept in the store, so jobs
  // recovered at Start count for nobody).
  std::map<std::string, std::string> owner_of_;
  std::optional<v1::Job> running_;         // the running job, with live progress
  std::atomic<bool> cancel_{false};        // the running job's cancel flag
  bool cancel_requested_ = false;          // by a user (not by Stop)
  std::atomic<bool> stopping_{false};
  bool started_ = false;
  std::mt19937_64 random_;
  std::thread runner_;
};

}  // namespace ptq::server
