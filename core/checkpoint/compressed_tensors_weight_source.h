// Reads a compressed-tensors "pack-quantized" checkpoint (ours or llm-compressor's; integer weights,
// group or channel strategy, symmetric or with zero points, act-order g_idx) as float weights:
// `X.weight` is dequantized from X.weight_packed / weight_scale / weight_zero_point / weight_g_idx
// (core/checkpoint/compressed_tensors_writer.h has the layout). Every other tensor passes through.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/model_files.h"
#include "core/model/weight_source.h"

namespace ptq {

struct CompressedTensorsConfig {
  int bits = 4;
  int64_t group_size = -1;  // -1: per channel
  bool sym = true;
};

// Parses config.json's "quantization_config" (JSON text) of quant_method "compressed-tensors".
// Anything this reader does not implement (another format, float or activation quantization,
// several config groups, block or tensor strategies) is an error naming it.
absl::StatusOr<CompressedTensorsConfig> ParseCompressedTensorsConfig(const std::string& json);

class CompressedTensorsWeightSource final : public WeightSource {
 public:
  CompressedTensorsWeightSource(std::shared_ptr<const ModelFiles> files, CompressedTensorsConfig config)
      : files_(std::move(files)), config_(config) {}
  bool Has(const std::string& name) const override;
  absl::StatusOr<at::Tensor> LoadFloat(const std::string& name) const override;

 private:
  std::shared_ptr<const ModelFiles> files_;
  CompressedTensorsConfig config_;
};

}  // namespace ptq
