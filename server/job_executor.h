// What runs a job's quantization for the scheduler. This phase has one implementation, the
// in-process EmbeddedWorker (server/embedded_worker.h) and RemoteExecutor (server/remote_executor.h),
// which runs the job on a group of `ptq-worker`s behind WorkerService.
//
// Contract: Run is called for one job at a time, on the scheduler's runner thread; the hooks are
// called on that thread, in order, before Run returns. Validate may be called from any thread,
// concurrently with Run.
#pragma once

#include <atomic>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ptq/v1/job.pb.h"

namespace ptq::server {

struct ExecutionHooks {
  std::string job_id;  // for logs and the workers' assignments
  std::function<void(const v1::LayerProgress&)> on_layer;
  std::function<void(const v1::BlockProgress&)> on_block;
  // Checked between layers; once set, Run returns CANCELLED and leaves no checkpoint.
  const std::atomic<bool>* cancel = nullptr;
  // A line for the job's log (e.g. a lost worker, a re-formed group); may be empty.
  std::function<void(const std::string&)> log;
};

class JobExecutor {
 public:
  virtual ~JobExecutor() = default;
  // Cheap checks before a job is queued; InvalidArgument with one readable line.
  virtual absl::Status Validate(const v1::JobSpec& spec) = 0;
  // Runs the job to the end: its result, CANCELLED when `hooks.cancel` stopped it, or the error.
  virtual absl::StatusOr<v1::JobResult> Run(const v1::JobSpec& spec, const ExecutionHooks& hooks) = 0;
};

}  // namespace ptq::server
