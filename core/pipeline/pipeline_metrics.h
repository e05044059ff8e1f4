// Records a pipeline run's progress in the process-wide metrics registry (label job_id: the service's
// job id, "local" for `ptq quantize`):
// blocks done, seconds per block and per phase, per-layer reconstruction loss, calibration tokens/s.
// Layers done and progress ratio come from core/pipeline/progress.cc. Not thread-safe (one per pipeline run).
#pragma once

#include <cstdint>
#include <string>

#include "core/pipeline/quantize_pipeline.h"

namespace ptq {

class PipelineMetrics {
 public:
  explicit PipelineMetrics(std::string job_id = "local") : job_(std::move(job_id)) {}

  // Reports one quantized linear layer of transformer block `block`.
  void Layer(int64_t block, const std::string& layer, const LayerReport& report);
  // Reports a finished block: `report` carries the run's cumulative phase seconds so far; `tokens`
  // calibration tokens went through the block's forwards.
  void Block(const QuantizeReport& report, double block_seconds, int64_t tokens);

 private:
  std::string job_;
  double forward_seen_ = 0, statistics_seen_ = 0, quantize_seen_ = 0;
};

}  // namespace ptq
