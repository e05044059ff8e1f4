// What a job runs, computed once right after its options are validated: the method as an enum, every
// default and derived setting (effective residual alpha, value-block damping, joint rows, the grid
// options `--scale-init` implies, the checkpoint's options). The pipeline reads the plan, never the
// raw options' strings.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "common/model_config.h"
#include "core/checkpoint/compressed_tensors_writer.h"
#include "core/checkpoint/gptq_checkpoint_writer.h"
#include "core/pipeline/quantize_options.h"
#include "core/quant/layer_shard.h"

namespace ptq {

struct QuantizePlan {
  QuantizeOptions options;  // as given: paths, sampling, evaluation
  ModelConfig config;
  c10::Device device = c10::kCPU;  // where the block loop's tensors live
  Method method = Method::kGptq;
  CheckpointFormat format = CheckpointFormat::kGptq;  // resolved: never kAuto
  // boa / turboboa: q/k with their heads' H_out, v with the value block (when on).
  bool attention_aware = false;
  bool value_block = false;
  QkHessian qk_hessian = QkHessian::kMoment;
  double residual_alpha = 0;  // 0: no residual correction, no full-precision stream
  int64_t residual_every = 1;  // the full-precision stream runs calibration batches 0, N, 2N, ...
  LayerSettings layer;        // what every linear layer's quantizer gets
  // The checkpoint's options in its format (dir and config_json are filled when it is written).
  GptqCheckpointOptions gptq_checkpoint;
  CompressedTensorsOptions compressed_tensors;
  std::string options_json;   // CheckpointOptionsJson(options).dump(): what the checkpoint records
  int64_t num_blocks = 0;
  int64_t num_linears = 0;    // linear layers in the model: num_blocks x kAllLinears.size()
};

// Validates `options` against `config` and resolves them into a plan.
absl::StatusOr<QuantizePlan> ResolvePlan(const QuantizeOptions& options, const ModelConfig& config);

}  // namespace ptq
