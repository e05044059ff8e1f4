#include "worker/quantize_spec.h"

#include <c10/util/Exception.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "worker/output_folder.h"
#include "common/model_config.h"

namespace ptq::worker {
namespace {

absl::Status Invalid(const std::string& field, const absl::Status& status) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", status.message()));
}

absl::Status CheckReadableFile(const std::string& field, const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return absl::InvalidArgumentError(absl::StrCat(field, " ", path, " is not a readable file"));
  }
  return absl::OkStatus();
}

}  // namespace

v1::JobSpec SpecFromQuantizeOptions(const QuantizeOptions& o) {
  v1::JobSpec s;
  s.set_model_path(o.model_dir);
  s.set_calib_path(o.calib_path);
  s.set_output_path(o.out_dir);
  s.set_eval_path(o.eval_path);
  s.set_force(o.force);
  s.set_method(o.method);
  s.set_format(o.format);
  s.set_bits(o.gptq.grid.bits);
  s.set_group_size(o.gptq.group_size);
  s.set_sym(o.gptq.grid.sym);
  s.set_mse_grid(o.gptq.grid.mse);
  s.set_act_order(o.gptq.act_order);
  s.set_static_groups(o.gptq.static_groups);
  s.set_damp(o.gptq.damp);
  s.set_joint_rows(o.joint_rows);
  s.set_refine_iters(o.refine_iters);
  s.set_requant_passes(o.requant_passes);
  s.set_scale_init(o.scale_init);
  s.set_partial_groups(o.partial_groups);
  if (o.residual_alpha >= 0) s.set_residual_alpha(o.residual_alpha);
  s.set_no_value_block(!o.value_block);
  s.set_no_sequential(!o.sequential);
  s.set_qk_hessian(o.qk_hessian);
  if (o.value_damp >= 0) s.set_value_damp(o.value_damp);
  s.set_act_order_rows(o.act_order_rows);
  s.set_samples(o.samples);
  s.set_seq_len(o.seq_len);
  s.set_seed(o.seed);
  s.set_batch_windows(o.batch_windows);
  s.set_eval_seq_len(o.eval_seq_len);
  s.set_eval_max_windows(o.eval_max_windows);
  s.set_skip_fp_eval(!o.eval_fp);
  return s;
}

QuantizeOptions QuantizeOptionsFromSpec(const v1::JobSpec& s) {
  QuantizeOptions o;  // its defaults are the API's defaults
  o.model_dir = s.model_path();
  o.calib_path = s.calib_path();
  o.out_dir = s.output_path();
  o.eval_path = s.eval_path();
  o.force = s.force();
  if (!s.method().empty()) o.method = s.method();
  if (!s.format().empty()) o.format = s.format();
  if (s.has_bits()) o.gptq.grid.bits = s.bits();
  if (s.has_group_size()) o.gptq.group_size = s.group_size();
  o.gptq.grid.sym = s.sym();
  o.gptq.grid.mse = s.mse_grid();
  o.gptq.act_order = s.act_order();
  o.gptq.static_groups = s.static_groups();
  if (s.has_damp()) o.gptq.damp = s.damp();
  if (s.has_joint_rows()) o.joint_rows = s.joint_rows();
  o.refine_iters = s.refine_iters();
  o.requant_passes = s.requant_passes();
  if (!s.scale_init().empty()) o.scale_init = s.scale_init();
  o.partial_groups = s.partial_groups();
  if (s.has_residual_alpha()) o.residual_alpha = s.residual_alpha();
  o.value_block = !s.no_value_block();
  o.sequential = !s.no_sequential();
  if (!s.qk_hessian().empty()) o.qk_hessian = s.qk_hessian();
  if (s.has_value_damp()) o.value_damp = s.value_damp();
  o.act_order_rows = s.act_order_rows();
  if (s.has_samples()) o.samples = s.samples();
  if (s.has_seq_len()) o.seq_len = s.seq_len();
  o.seed = s.seed();
  if (s.has_batch_windows()) o.batch_windows = s.batch_windows();
  o.eval_seq_len = s.eval_seq_len();
  o.eval_max_windows = s.eval_max_windows();
  o.eval_fp = !s.skip_fp_eval();
  return o;
}

absl::Status ValidateQuantizeSpec(const v1::JobSpec& spec) {
  if (spec.model_path().empty()) return absl::InvalidArgumentError("model_path is required");
  if (spec.calib_path().empty()) return absl::InvalidArgumentError("calib_path is required");
  if (spec.output_path().empty()) return absl::InvalidArgumentError("output_path is required");
  auto config = LoadModelConfig(spec.model_path());
  if (!config.ok()) return Invalid("model_path", config.status());
  if (auto s = CheckReadableFile("calib_path", spec.calib_path()); !s.ok()) return s;
  if (!spec.eval_path().empty()) {
    if (auto s = CheckReadableFile("eval_path", spec.eval_path()); !s.ok()) return s;
  }
  if (!spec.force()) {
    // The cheap half of the check OutputFolder makes when the job starts: refusing now saves a
    // wait in the queue.
    std::error_code ec;
    const std::filesystem::path out(spec.output_path());
    if (std::filesystem::exists(out / "config.json", ec)) {
      return absl::InvalidArgumentError(absl::StrCat("output_path ", spec.output_path(),
                                                     " already holds a model (use --force to replace it)"));
    }
  }
  const QuantizeOptions options = QuantizeOptionsFromSpec(spec);
  if (options.batch_windows <= 0) return absl::InvalidArgumentError("batch_windows must be positive");
  if (auto s = ValidateQuantizeOptions(options, *config); !s.ok()) {
    return absl::InvalidArgumentError(s.message());
  }
  return absl::OkStatus();
}

absl::StatusOr<QuantizeReport> RunQuantizeSpec(const v1::JobSpec& spec, const JobHooks& hooks) {
  const QuantizeOptions options = QuantizeOptionsFromSpec(spec);
  absl::StatusOr<QuantizeReport> report;
  try {
    report = RunQuantize(options, hooks);
  } catch (const c10::Error& e) {  // LibTorch throws; the job fails with its message
    report = absl::InternalError(absl::StrCat("LibTorch: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    report = absl::InternalError(e.what());
  }
  return report;  // a failed run's staging folder is gone with its OutputFolder
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
  return e;
}

}  // namespace ptq::worker
