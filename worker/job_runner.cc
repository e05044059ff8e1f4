#include "worker/job_runner.h"

#include "core/pipeline/torch_errors.h"
#include "worker/quantize_spec.h"

namespace ptq::worker {

absl::StatusOr<QuantizeReport> RunQuantizeSpec(const v1::JobSpec& spec, const JobHooks& hooks,
                                               const std::string& device) {
  QuantizeOptions options = QuantizeOptionsFromSpec(spec);
  options.device = device;
  // A failed run's staging folder is gone with its OutputFolder.
  return CatchTorchErrors([&] { return RunQuantize(options, hooks); });
}

v1::JobResult JobResultFromReport(const QuantizeReport& r) {
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

v1::LayerProgress LayerProgressToProto(const LayerProgress& p) {
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
  e.set_reloaded(p.reloaded);
  return e;
}

}  // namespace ptq::worker
