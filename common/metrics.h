// A small Prometheus metrics registry: counters, gauges and histograms with labels, rendered in the
// Prometheus text exposition format 0.0.4 (# HELP / # TYPE lines, one sample per line).
//
// Why not prometheus-cpp: it is not packaged in Debian 12 (no libprometheus-cpp-dev), and the project
// builds only from Debian's apt. What we need of it is small: this registry (about 300 lines) and an
// HTTP `/metrics` endpoint, which common/metrics_server.h serves with Debian's libmicrohttpd-dev
// (civetweb, prometheus-cpp's exposer, cannot start its threads next to libtorch: its fixed small
// stacks cannot hold libtorch's static TLS). Names follow Prometheus conventions: base units in the name (`_seconds`, `_bytes`, `_ratio`), counters end in `_total`. The names the servers
// export are declared once, in common/metric_names.h.
//
// Thread safety: everything here may be called from any thread. Counter and Gauge updates are
// lock-free atomics; a Histogram observation takes the histogram's own mutex; creating a labelled
// child and rendering take the registry's mutex. References returned by the registry stay valid for
// the registry's lifetime (children are never removed).
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace ptq::metrics {

// Label name/value pairs, in the order they are rendered.
using Labels = std::vector<std::pair<std::string, std::string>>;

enum class MetricType { kCounter, kGauge, kHistogram };

class Counter {
 public:
  // REQUIRES: amount >= 0 (a negative amount is ignored: counters only go up).
  void Increment(double amount = 1.0);
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

class Gauge {
 public:
  void Set(double value) { value_.store(value, std::memory_order_relaxed); }
  void Add(double amount);
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

class Histogram {
 public:
  // `upper_bounds` ascending, without +Inf (added implicitly).
  explicit Histogram(std::vector<double> upper_bounds);
  void Observe(double value);

  struct Snapshot {
    std::vector<double> upper_bounds;
    std::vector<uint64_t> cumulative_counts;  // one per bound, then the +Inf bucket (== count)
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot Read() const;

 private:
  const std::vector<double> upper_bounds_;
  mutable std::mutex mu_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative; last is +Inf
  double sum_ = 0;
};

// Buckets for durations from ~1 ms to ~1 h.
std::vector<double> DefaultSecondsBuckets();

class Registry {
 public:
  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Returns the child of family `name` with `labels`, creating family and child on first use. The
  // first call fixes the family's help text (and buckets); a later call with another type for the same
  // name is a programming error and returns a detached metric that is never rendered.
  Counter& GetCounter(const std::string& name, const std::string& help, const Labels& labels = {});
  Gauge& GetGauge(const std::string& name, const std::string& help, const Labels& labels = {});
  Histogram& GetHistogram(const std::string& name, const std::string& help,
                          const Labels& labels = {},
                          const std::vector<double>& upper_bounds = DefaultSecondsBuckets());

  // The text exposition format 0.0.4, families sorted by name, children by labels.
  std::string Render() const;

 private:
  struct Family {
    MetricType type;
    std::string help;
    std::vector<double> upper_bounds;
    std::map<Labels, std::unique_ptr<Counter>> counters;
    std::map<Labels, std::unique_ptr<Gauge>> gauges;
    std::map<Labels, std::unique_ptr<Histogram>> histograms;
  };
  Family* FamilyFor(const std::string& name, MetricType type, const std::string& help,
                    const std::vector<double>& upper_bounds);

  mutable std::mutex mu_;
  std::map<std::string, Family> families_;
  // Metrics handed out for a name/type clash: kept alive, never rendered.
  std::vector<std::unique_ptr<Counter>> detached_counters_;
  std::vector<std::unique_ptr<Gauge>> detached_gauges_;
  std::vector<std::unique_ptr<Histogram>> detached_histograms_;
};

// The process-wide registry that the servers and the pipeline record into and `/metrics` serves. The
// project's only global.
Registry& GlobalRegistry();

// Formats a sample value as the exposition format wants it: integers without a decimal point,
// otherwise the shortest round-tripping decimal; "+Inf", "-Inf", "NaN".
std::string FormatValue(double value);

// Sets the process gauges (resident memory) in `registry`; the exposer calls it before each scrape.
void UpdateProcessMetrics(Registry& registry);

}  // namespace ptq::metrics
