#include "core/pipeline/quantize_plan.h"

#include <algorithm>

#include "common/status_macros.h"
#include "core/model/block_weights.h"
#include "core/pipeline/device.h"
#include "nlohmann/json.hpp"

namespace ptq {

absl::StatusOr<QuantizePlan> ResolvePlan(const QuantizeOptions& o, const ModelConfig& config) {
  PTQ_RETURN_IF_ERROR(ValidateQuantizeOptions(o, config));
  PTQ_ASSIGN_OR_RETURN(const c10::Device device, ResolveDevice(o.device));
  const QuantizeOptions resolved = ResolveQuantizeOptions(o);
  QuantizePlan plan;
  plan.options = o;
  plan.config = config;
  plan.device = device;
  PTQ_ASSIGN_OR_RETURN(plan.method, ParseMethod(o.method));
  plan.format = ResolveCheckpointFormat(o);
  plan.attention_aware = plan.method == Method::kBoa || plan.method == Method::kTurboBoa;
  plan.value_block = resolved.value_block;
  if (plan.attention_aware) ParseQkHessian(o.qk_hessian, &plan.qk_hessian);  // validated
  plan.residual_alpha = resolved.residual_alpha;
  plan.residual_every = std::max<int64_t>(1, resolved.residual_every);

  LayerSettings& layer = plan.layer;
  layer.gptq = o.gptq;
  if (resolved.scale_init == "hessian" || resolved.scale_init == "hessian-block") {
    layer.gptq.grid.mse = true;
    layer.gptq.grid.hessian_search = true;
    layer.gptq.grid.hessian_block = resolved.scale_init == "hessian-block";
  }
  // The classic GPTQ format stores zero - 1: keep asymmetric zeros >= 1 (docs/formats.md).
  if (plan.format == CheckpointFormat::kGptq && !layer.gptq.grid.sym) layer.gptq.grid.min_zero = 1;
  layer.joint_rows = resolved.joint_rows;
  layer.refine_iters = resolved.refine_iters;
  layer.requant_passes = o.requant_passes;
  layer.rtn = plan.method == Method::kRtn;
  layer.value_damp = o.value_damp >= 0 ? o.value_damp : o.gptq.damp;
  layer.act_order_rows = o.act_order_rows;

  plan.options_json = CheckpointOptionsJson(o).dump();
  GptqCheckpointOptions& co = plan.gptq_checkpoint;
  co.source_dir = o.model_dir;
  co.bits = o.gptq.grid.bits;
  co.group_size = o.gptq.group_size;
  co.sym = o.gptq.grid.sym;
  // With static groups g_idx stays in column order, so the checkpoint is an ordinary non-act-order
  // one and the fast kernels apply.
  co.desc_act = o.gptq.act_order && !o.gptq.static_groups;
  co.static_groups = o.gptq.static_groups;
  co.damp_percent = o.gptq.damp;
  co.ptq_json = plan.options_json;
  CompressedTensorsOptions& ct = plan.compressed_tensors;
  ct.source_dir = o.model_dir;
  ct.bits = co.bits;
  ct.group_size = co.group_size;
  ct.sym = co.sym;
  // compressed-tensors' names: "group" stores g_idx (act-order groups), "weight" quantizes in
  // act-order with groups in column order (our static groups, or one group per channel).
  if (o.gptq.act_order) ct.actorder = co.desc_act && o.gptq.group_size > 0 ? "group" : "weight";
  ct.ptq_json = plan.options_json;
  co.max_shard_bytes = ct.max_shard_bytes = static_cast<uint64_t>(o.max_shard_mib) << 20;

  plan.num_blocks = config.num_hidden_layers;
  plan.num_linears = config.num_hidden_layers * static_cast<int64_t>(kAllLinears.size());
  return plan;
}

}  // namespace ptq
