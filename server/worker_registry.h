// The coordinator's view of its remote workers and of the attempts they run: registrations and
// leases, each worker's next assignment, every attempt's progress and outcomes, and the rendezvous
// key-value store the ranks of an attempt meet through (Gloo's rendezvous::Store, served over gRPC).
// WorkerServiceImpl (the workers' side) and RemoteExecutor (the scheduler's side) share it.
//
// A worker is live while its lease runs (every call from it renews it). One whose lease expired is
// dropped; if it was in an attempt and had not reported, that rank's outcome becomes UNAVAILABLE
// ("lost"). A worker is idle when live and in no attempt it has not reported on: a survivor of an
// aborted attempt is not given new work until it has stopped and said so.
//
// Thread safety: every method may be called from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/metrics.h"
#include "common/version.h"
#include "ptq/v1/worker_service.pb.h"

namespace ptq::server {

struct WorkerRegistryOptions {
  std::chrono::milliseconds lease{std::chrono::seconds(5)};
  std::string version = kVersion;  // what a worker's build must report
  // Limits on what one attempt may put in the rendezvous store (a hostile or broken worker).
  size_t max_store_value_bytes = 1 << 20;
  size_t max_store_keys = 8192;
};

// What the runner of an attempt learns from PollAttempt.
struct AttemptUpdate {
  std::vector<v1::ReportProgressRequest> progress;  // rank 0's reports since the last poll, in order
  int size = 0;
  int outcomes = 0;                        // ranks that reported or were lost
  std::optional<absl::Status> failure;     // the first rank error or lost worker
  bool transient = false;                  // failure can be cured by another group (lost, refused)
  std::optional<v1::JobResult> result;     // rank 0's, once it succeeded
};

class WorkerRegistry {
 public:
  WorkerRegistry(WorkerRegistryOptions options, metrics::Registry& metrics);

  std::chrono::milliseconds lease() const { return options_.lease; }

  // --- The workers' calls (WorkerService). Unknown worker: NOT_FOUND; refused: FAILED_PRECONDITION.
  absl::StatusOr<v1::RegisterWorkerResponse> Register(const v1::RegisterWorkerRequest& request);
  absl::StatusOr<v1::HeartbeatResponse> Heartbeat(const std::string& worker_id);
  // Waits up to `wait` for the worker's next assignment (an empty response if none).
  absl::StatusOr<v1::GetAssignmentResponse> WaitAssignment(const std::string& worker_id,
                                                           std::chrono::milliseconds wait);
  absl::StatusOr<v1::ReportProgressResponse> ReportProgress(const v1::ReportProgressRequest& report);
  absl::Status ReportResult(const v1::ReportResultRequest& report);
  // Keys must lie under the store prefix of the caller's current attempt.
  absl::Status StoreSet(const std::string& worker_id, const std::string& key, std::string value);
  // Waits up to `wait` until every key is set: DEADLINE_EXCEEDED otherwise, ABORTED when the
  // attempt was aborted meanwhile.
  absl::StatusOr<std::vector<std::string>> StoreGet(const std::string& worker_id,
                                                    const std::vector<std::string>& keys,
                                                    std::chrono::milliseconds wait);

  // --- The executor's calls.
  // Waits up to `wait` until `want` workers are idle and returns them (registration order). When the
  // wait ends with fewer, returns those that are idle if they are at least `at_least`, else none.
  std::vector<std::string> WaitForIdleWorkers(int want, int at_least, std::chrono::milliseconds wait);
  // Gives members[r] the assignment of rank r; returns the attempt id.
  int64_t StartAttempt(const std::string& job_id, const v1::JobSpec& spec,
                       const std::string& model_fingerprint,
                       const std::vector<std::string>& members);
  // Waits up to `wait` for news about the attempt (a report, a result, a lost member).
  AttemptUpdate PollAttempt(int64_t attempt, std::chrono::milliseconds wait);
  // Tells the attempt's members to stop (their next heartbeat or progress report says so).
  void AbortAttempt(int64_t attempt);
  // Forgets the attempt and its store keys.
  void FinishAttempt(int64_t attempt);
  // A line describing the members, for the job log: "worker-ab12-1 (10.0.0.5), ...".
  std::string Describe(const std::vector<std::string>& members);
  int LiveWorkers();

 private:
  struct Worker {
    std::string address;
    std::string device;
    int64_t order = 0;
    std::chrono::steady_clock::time_point deadline;
    std::optional<v1::Assignment> pending;  // not yet fetched
    int64_t busy_attempt = 0;               // 0: none
  };
  struct Attempt {
    std::string job_id;
    std::string store_prefix;
    std::vector<std::string> members;
    std::vector<bool> reported;
    int outcomes = 0;
    bool aborted = false;
    std::vector<v1::ReportProgressRequest> progress;
    std::optional<absl::Status> failure;
    bool transient = false;
    std::optional<v1::JobResult> result;
    size_t store_keys = 0;
  };

  // The following REQUIRE mu_ held.
  // The caller's live record (renewing its lease), or NOT_FOUND / FAILED_PRECONDITION.
  absl::StatusOr<Worker*> Touch(const std::string& worker_id);
  // Drops workers whose lease expired; their unreported ranks become lost.
  void ExpireLeases();
  // Records rank `rank`'s outcome once.
  void RecordOutcome(Attempt& attempt, int rank, const absl::Status& status, bool transient);
  void UpdateGauge();

  const WorkerRegistryOptions options_;
  metrics::Registry& metrics_;
  const std::string epoch_;  // makes ids unique across coordinator restarts

  absl::Mutex mu_;
  absl::CondVar changed_;
  int64_t next_worker_ = 1;
  int64_t next_attempt_;
  std::map<std::string, Worker> workers_;
  std::map<std::string, std::string> refused_;  // worker id -> reason
  std::map<int64_t, Attempt> attempts_;
  std::map<std::string, std::string> store_;
};

}  // namespace ptq::server
