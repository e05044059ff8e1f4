#include "server/embedded_worker.h"

#include <c10/util/Exception.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "worker/quantize_pipeline.h"
#include "worker/quantize_spec.h"

namespace ptq::server {
namespace {

v1::JobResult ResultFromReport(const worker::QuantizeReport& r) {
  v1::JobResult result;
  result.set_checkpoint_path(r.out_dir);
  if (r.perplexity_fp >= 0) result.set_perplexity_before(r.perplexity_fp);
  if (r.perplexity_quant >= 0) result.set_perplexity_after(r.perplexity_quant);
  result.set_seconds(r.seconds);
  for (const auto& l : r.layers) {
    v1::LayerResult* layer = result.add_layers();
    layer->set_name(l.name);
    layer->set_loss(l.loss);
    layer->set_relative_loss(l.relative_loss);
    layer->set_seconds(l.seconds);
  }
  return result;
}

// A stopped run leaves its staging folder (OutputFolder writes into "<out>.partial"); remove it so
// that a cancelled or failed job leaves nothing behind at the output path.
void RemoveStaging(const std::string& out_dir) {
  if (out_dir.empty()) return;
  std::error_code ec;
  std::filesystem::path staging = std::filesystem::absolute(out_dir, ec).lexically_normal();
  if (staging.filename().empty()) staging = staging.parent_path();
  staging += ".partial";
  std::filesystem::remove_all(staging, ec);
}

}  // namespace

absl::Status EmbeddedWorker::Validate(const v1::JobSpec& spec) {
  return worker::ValidateQuantizeSpec(spec);
}

absl::StatusOr<v1::JobResult> EmbeddedWorker::Run(const v1::JobSpec& spec,
                                                  const ExecutionHooks& hooks) {
  const worker::QuantizeOptions options = worker::QuantizeOptionsFromSpec(spec);
  worker::JobHooks job_hooks;
  job_hooks.cancel = hooks.cancel;
  if (hooks.on_layer) {
    job_hooks.on_layer = [&hooks](const worker::LayerProgress& p) {
      v1::LayerProgress e;
      e.set_block(p.block);
      e.set_num_blocks(p.num_blocks);
      e.set_layers_done(p.layers_done);
      e.set_layers_total(p.layers_total);
      if (p.layer != nullptr) {
        e.set_layer(p.layer->name);
        e.set_loss(p.layer->loss);
        e.set_relative_loss(p.layer->relative_loss);
        e.set_layer_seconds(p.layer->seconds);
      }
      e.set_elapsed_seconds(p.elapsed_seconds);
      e.set_eta_seconds(p.eta_seconds);
      hooks.on_layer(e);
    };
  }
  if (hooks.on_block) {
    job_hooks.on_block = [&hooks](int64_t block, int64_t num_blocks) {
      v1::BlockProgress e;
      e.set_block(block);
      e.set_num_blocks(num_blocks);
      hooks.on_block(e);
    };
  }
  absl::StatusOr<worker::QuantizeReport> report;
  try {
    report = worker::RunQuantize(options, job_hooks);
  } catch (const c10::Error& e) {  // LibTorch throws; the job fails with its message
    report = absl::InternalError(absl::StrCat("LibTorch: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    report = absl::InternalError(e.what());
  }
  if (!report.ok()) {
    RemoveStaging(options.out_dir);
    return report.status();
  }
  return ResultFromReport(*report);
}

}  // namespace ptq::server
