#include "server/embedded_worker.h"

#include "core/pipeline/quantize_pipeline.h"
#include "worker/job_runner.h"
#include "worker/quantize_spec.h"

namespace ptq::server {

absl::Status EmbeddedWorker::Validate(const v1::JobSpec& spec) {
  return worker::ValidateQuantizeSpec(spec);
}

absl::StatusOr<v1::JobResult> EmbeddedWorker::Run(const v1::JobSpec& spec,
                                                  const ExecutionHooks& hooks) {
  JobHooks job_hooks;
  job_hooks.cancel = hooks.cancel;
  if (!hooks.job_id.empty()) job_hooks.job_id = hooks.job_id;
  if (hooks.on_layer) {
    job_hooks.on_layer = [&hooks](const LayerProgress& p) {
      hooks.on_layer(worker::LayerProgressToProto(p));
    };
  }
  if (hooks.on_block) {
    job_hooks.on_block = [&hooks](int64_t block, int64_t num_blocks, bool reloaded) {
      v1::BlockProgress e;
      e.set_block(block);
      e.set_num_blocks(num_blocks);
      e.set_reloaded(reloaded);
      hooks.on_block(e);
    };
  }
  auto report = worker::RunQuantizeSpec(spec, job_hooks);
  if (!report.ok()) return report.status();
  return worker::JobResultFromReport(*report);
}

}  // namespace ptq::server
