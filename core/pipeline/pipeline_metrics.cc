#include "core/pipeline/pipeline_metrics.h"

#include "common/metric_names.h"

namespace ptq {
namespace {

void AddPhase(const std::string& job, const char* phase, double total, double& seen) {
  metrics::CounterFor(metrics::GlobalRegistry(), metrics::names::kPhaseSeconds,
                      {{"job_id", job}, {"phase", phase}})
      .Increment(total - seen);
  seen = total;
}

}  // namespace

void PipelineMetrics::Layer(int64_t block, const std::string& layer, const LayerReport& report) {
  metrics::Registry& r = metrics::GlobalRegistry();
  const metrics::Labels labels = {{"job_id", job_}, {"block", std::to_string(block)}, {"layer", layer}};
  metrics::GaugeFor(r, metrics::names::kLayerLoss, labels).Set(report.loss);
  metrics::GaugeFor(r, metrics::names::kLayerRelativeLoss, labels).Set(report.relative_loss);
}

void PipelineMetrics::Block(const QuantizeReport& report, double block_seconds, int64_t tokens) {
  metrics::Registry& r = metrics::GlobalRegistry();
  const metrics::Labels kJob = {{"job_id", job_}};
  metrics::CounterFor(r, metrics::names::kBlocksDone, kJob).Increment();
  metrics::HistogramFor(r, metrics::names::kBlockDuration, kJob).Observe(block_seconds);
  const double forward_in_block = report.forward_seconds - forward_seen_;
  AddPhase(job_, "forward", report.forward_seconds, forward_seen_);
  AddPhase(job_, "statistics", report.statistics_seconds, statistics_seen_);
  AddPhase(job_, "quantize", report.quantize_seconds, quantize_seen_);
  metrics::CounterFor(r, metrics::names::kCalibrationTokens, kJob).Increment(static_cast<double>(tokens));
  if (forward_in_block > 0) {
    metrics::GaugeFor(r, metrics::names::kCalibrationTokensPerSecond, kJob)
        .Set(static_cast<double>(tokens) / forward_in_block);
  }
}

}  // namespace ptq
