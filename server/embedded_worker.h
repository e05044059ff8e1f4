// The coordinator's in-process worker: runs a job with the one-process pipeline
// (RunQuantize) on the calling thread. The only server file that includes worker/; it goes
// away when jobs run on remote workers.
#pragma once

#include "server/job_executor.h"

namespace ptq::server {

class EmbeddedWorker final : public JobExecutor {
 public:
  absl::Status Validate(const v1::JobSpec& spec) override;
  absl::StatusOr<v1::JobResult> Run(const v1::JobSpec& spec, const ExecutionHooks& hooks) override;
};

}  // namespace ptq::server
