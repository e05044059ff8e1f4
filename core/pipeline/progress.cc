#include "core/pipeline/progress.h"

#include <spdlog/spdlog.h>

#include "common/metric_names.h"

namespace ptq {

Progress::Progress(std::string task, int64_t total_units, std::string job_id)
    : task_(std::move(task)),
      job_id_(std::move(job_id)),
      total_(total_units),
      start_(std::chrono::steady_clock::now()) {}

double Progress::ElapsedSeconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Progress::Advance(int64_t units, const std::string& detail) {
  done_ += units;
  const double elapsed = ElapsedSeconds();
  const double eta = done_ > 0 ? elapsed * static_cast<double>(total_ - done_) / done_ : 0.0;
  spdlog::info("{} {:3.0f}% · {} · {:.1f} s elapsed · ETA {:.1f} s", task_,
               100.0 * static_cast<double>(done_) / static_cast<double>(total_), detail, elapsed, eta);
  // The pipeline counts its linear layers here; export them.
  if (task_ == "quantize") {
    metrics::Registry& registry = metrics::GlobalRegistry();
    const metrics::Labels job = {{"job_id", job_id_}};
    metrics::CounterFor(registry, metrics::names::kLayersDone, job).Increment(static_cast<double>(units));
    metrics::GaugeFor(registry, metrics::names::kJobProgressRatio, job)
        .Set(total_ > 0 ? static_cast<double>(done_) / static_cast<double>(total_) : 0.0);
    metrics::GaugeFor(registry, metrics::names::kLastProgressTimestamp, job)
        .Set(std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count());
  }
}

}  // namespace ptq
