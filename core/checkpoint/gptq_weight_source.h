// Reads a GPTQ checkpoint (ours or anyone's: classic or gptq_v2 zeros, act-order g_idx, with or
// without bias) as float weights: `X.weight` is dequantized from X.qweight / qzeros / scales / g_idx,
// W[n, k] = scales[g, n] * (q[k, n] - zero[g, n]) with g = g_idx[k]. Every other tensor passes
// through. This is what lets `ptq eval` measure a written checkpoint.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/model_files.h"
#include "core/model/weight_source.h"

namespace ptq {

struct GptqConfig {
  int bits = 4;
  int64_t group_size = 128;  // -1: per channel
  bool v2 = false;           // checkpoint_format "gptq_v2": zeros stored as they are
};

// Parses config.json's "quantization_config" (JSON text). Unknown quant_method or bits: an error
// naming it.
absl::StatusOr<GptqConfig> ParseGptqConfig(const std::string& quantization_config_json);

class GptqWeightSource final : public WeightSource {
 public:
  GptqWeightSource(std::shared_ptr<const ModelFiles> files, GptqConfig config)
      : files_(std::move(files)), config_(config) {}
  bool Has(const std::string& name) const override;
  absl::StatusOr<at::Tensor> LoadFloat(const std::string& name) const override;

 private:
  std::shared_ptr<const ModelFiles> files_;
  GptqConfig config_;
};

}  // namespace ptq
