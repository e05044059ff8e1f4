// Runs each job on a group of remote `ptq-worker`s (coordinator `--workers N`). The job is run as
// attempts: the first waits for N idle workers; every rank gets the same spec and its rank, they meet
// through the coordinator's rendezvous store and quantize together exactly as `ptq quantize
// --workers N` does (so the checkpoint is the one-process checkpoint, byte for byte). Rank 0 reports
// progress, writes the checkpoint to the job's output path (storage every worker and the coordinator
// share) and reports the result.
//
// Faults: when a rank fails with a transient error (a peer left the collective, a lease expired, a
// worker refused the model it sees), the attempt is aborted, the survivors are waited for, and the
// job is re-run from the start by a new group of the live workers (up to N; fewer when no replacement
// registers within a lease). Other errors (a bad spec) fail the job. Determinism across group sizes
// makes the re-run's result identical.
#pragma once

#include "server/job_executor.h"
#include "server/worker_registry.h"

namespace ptq::server {

struct RemoteExecutorOptions {
  int workers = 1;       // group size wanted
  int max_attempts = 4;  // attempts per job before it fails
};

class RemoteExecutor final : public JobExecutor {
 public:
  // REQUIRES: `registry` outlives the executor.
  RemoteExecutor(WorkerRegistry& registry, RemoteExecutorOptions options)
      : registry_(registry), options_(options) {}

  absl::Status Validate(const v1::JobSpec& spec) override;
  absl::StatusOr<v1::JobResult> Run(const v1::JobSpec& spec, const ExecutionHooks& hooks) override;

 private:
  WorkerRegistry& registry_;
  const RemoteExecutorOptions options_;
};

}  // namespace ptq::server
