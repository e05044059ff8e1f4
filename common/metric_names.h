// Every metric PTQ Service exports, declared once: name, type, help text and label names. The servers
// and the pipeline record through these; tests/deploy/check_manifests.py reads this file to check that
// every query in deploy/grafana/ and the alert rules names a metric we export (a histogram NAME also
// exports NAME_bucket, NAME_sum and NAME_count). Keep one declaration per line in the form
// `inline constexpr MetricSpec kX{"name", MetricType::kY, ...}` so that check can parse it.
#pragma once

#include "common/metrics.h"

namespace ptq::metrics::names {

struct MetricSpec {
  const char* name;
  MetricType type;
  const char* help;
  const char* labels;  // comma-separated label names, documentation only
};

// Jobs (coordinator; `ptq quantize` reports its one job as job_id="local"). The label is job_id, not
// job: Prometheus sets `job` to the scrape job and would rename ours to exported_job.
inline constexpr MetricSpec kJobs{"ptq_jobs", MetricType::kGauge, "Jobs by state.", "state"};
inline constexpr MetricSpec kJobProgressRatio{"ptq_job_progress_ratio", MetricType::kGauge, "Fraction of a job's linear layers quantized, 0 to 1.", "job_id"};
inline constexpr MetricSpec kBlocksDone{"ptq_blocks_done_total", MetricType::kCounter, "Transformer blocks quantized.", "job_id"};
inline constexpr MetricSpec kLayersDone{"ptq_layers_done_total", MetricType::kCounter, "Linear layers quantized.", "job_id"};
inline constexpr MetricSpec kLastProgressTimestamp{"ptq_last_progress_timestamp_seconds", MetricType::kGauge, "Unix time of the job's last finished layer.", "job_id"};

// Time.
inline constexpr MetricSpec kBlockDuration{"ptq_block_duration_seconds", MetricType::kHistogram, "Wall time per transformer block.", "job_id"};
inline constexpr MetricSpec kPhaseSeconds{"ptq_phase_seconds_total", MetricType::kCounter, "Wall time spent per phase (forward, statistics, collective, quantize).", "job_id,phase"};

// Quality.
inline constexpr MetricSpec kLayerLoss{"ptq_layer_reconstruction_loss", MetricType::kGauge, "Reconstruction loss tr((W-Q)H(W-Q)^T) of the last quantized layer of this name.", "job_id,block,layer"};
inline constexpr MetricSpec kLayerRelativeLoss{"ptq_layer_relative_reconstruction_loss_ratio", MetricType::kGauge, "Reconstruction loss relative to tr(W H W^T).", "job_id,block,layer"};

// Calibration throughput.
inline constexpr MetricSpec kCalibrationTokens{"ptq_calibration_tokens_total", MetricType::kCounter, "Calibration tokens run through block forwards.", "job_id"};
inline constexpr MetricSpec kCalibrationTokensPerSecond{"ptq_calibration_tokens_per_second", MetricType::kGauge, "Calibration tokens per second of forward time in the last block.", "job_id"};

// Distributed service.
inline constexpr MetricSpec kCollectiveBytes{"ptq_collective_bytes_total", MetricType::kCounter, "Bytes sent by collectives.", "op"};
inline constexpr MetricSpec kWorkerHeartbeats{"ptq_worker_heartbeats_total", MetricType::kCounter, "Heartbeats received from (coordinator) or sent by (worker) workers.", "worker"};
inline constexpr MetricSpec kWorkerLeaseExpiries{"ptq_worker_lease_expiries_total", MetricType::kCounter, "Worker leases that expired without a heartbeat.", ""};
inline constexpr MetricSpec kWorkersConnected{"ptq_workers_connected", MetricType::kGauge, "Workers registered with a live lease.", ""};

// Process.
inline constexpr MetricSpec kProcessResidentMemoryBytes{"ptq_process_resident_memory_bytes", MetricType::kGauge, "Resident set size of this process.", ""};
inline constexpr MetricSpec kGpuMemoryUsedBytes{"ptq_gpu_memory_used_bytes", MetricType::kGauge, "GPU memory allocated by this process.", "device"};

inline constexpr const MetricSpec* kAll[] = {
    &kJobs, &kJobProgressRatio, &kBlocksDone, &kLayersDone, &kLastProgressTimestamp,
    &kBlockDuration, &kPhaseSeconds, &kLayerLoss, &kLayerRelativeLoss, &kCalibrationTokens,
    &kCalibrationTokensPerSecond, &kCollectiveBytes, &kWorkerHeartbeats, &kWorkerLeaseExpiries,
    &kWorkersConnected, &kProcessResidentMemoryBytes, &kGpuMemoryUsedBytes,
};

}  // namespace ptq::metrics::names

namespace ptq::metrics {

// Convenience accessors on a registry, by spec.
inline Counter& CounterFor(Registry& r, const names::MetricSpec& s, const Labels& labels = {}) {
  return r.GetCounter(s.name, s.help, labels);
}
inline Gauge& GaugeFor(Registry& r, const names::MetricSpec& s, const Labels& labels = {}) {
  return r.GetGauge(s.name, s.help, labels);
}
inline Histogram& HistogramFor(Registry& r, const names::MetricSpec& s, const Labels& labels = {}) {
  return r.GetHistogram(s.name, s.help, labels);
}

}  // namespace ptq::metrics
