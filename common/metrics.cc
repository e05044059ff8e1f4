#include "common/metrics.h"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <fstream>

#include "common/metric_names.h"

namespace ptq::metrics {
namespace {

// Label values escape backslash, double quote and line feed; HELP text escapes backslash and line feed.
std::string Escape(const std::string& text, bool quote) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (quote && c == '"') {
      out += "\\\"";
    } else {
      out += c;
    }
  }
  return out;
}

// `{a="x",b="y"}`, or nothing when there are no labels.
std::string LabelText(const Labels& labels, const std::string& extra_name = "",
                      const std::string& extra_value = "") {
  Labels all = labels;
  if (!extra_name.empty()) all.emplace_back(extra_name, extra_value);
  if (all.empty()) return "";
  std::string out = "{";
  for (size_t i = 0; i < all.size(); ++i) {
    if (i > 0) out += ",";
    out += all[i].first + "=\"" + Escape(all[i].second, /*quote=*/true) + "\"";
  }
  return out + "}";
}

const char* TypeName(MetricType type) {
  switch (type) {
    case MetricType::kCounter: return "counter";
    case MetricType::kGauge: return "gauge";
    case MetricType::kHistogram: return "histogram";
  }
  return "untyped";
}

}  // namespace

void Counter::Increment(double amount) {
  if (!(amount >= 0)) return;
  value_.fetch_add(amount, std::memory_order_relaxed);
}

void Gauge::Add(double amount) { value_.fetch_add(amount, std::memory_order_relaxed); }

Histogram::Histogram(std::vector<double> upper_bounds)
    : upper_bounds_(std::move(upper_bounds)), counts_(upper_bounds_.size() + 1, 0) {}

void Histogram::Observe(double value) {
  // A value equal to a bound belongs to that bucket (le = "less than or equal").
  size_t bucket = std::lower_bound(upper_bounds_.begin(), upper_bounds_.end(), value) -
                  upper_bounds_.begin();
  std::lock_guard<std::mutex> lock(mu_);
  ++counts_[bucket];
  sum_ += value;
}

Histogram::Snapshot Histogram::Read() const {
  Snapshot snapshot;
  snapshot.upper_bounds = upper_bounds_;
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t running = 0;
  for (uint64_t c : counts_) {
    running += c;
    snapshot.cumulative_counts.push_back(running);
  }
  snapshot.sum = sum_;
  snapshot.count = running;
  return snapshot;
}

std::vector<double> DefaultSecondsBuckets() {
  return {0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600};
}

std::string FormatValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  if (value == std::floor(value) && std::fabs(value) < 1e15) {
    char buffer[32];
    std::snprintf(buffer, sizeof(buffer), "%.0f", value);
    return buffer;
  }
  char buffer[64];
  auto result = std::to_chars(buffer, buffer + sizeof(buffer), value);
  return std::string(buffer, result.ptr);
}

Registry::Family* Registry::FamilyFor(const std::string& name, MetricType type,
                                      const std::string& help,
                                      const std::vector<double>& upper_bounds) {
  auto it = families_.find(name);
  if (it == families_.end()) {
    Family family;
    family.type = type;
    family.help = help;
    family.upper_bounds = upper_bounds;
    it = families_.emplace(name, std::move(family)).first;
  }
  return it->second.type == type ? &it->second : nullptr;
}

Counter& Registry::GetCounter(const std::string& name, const std::string& help,
                              const Labels& labels) {
  std::lock_guard<std::mutex> lock(mu_);
  Family* family = FamilyFor(name, MetricType::kCounter, help, {});
  if (family == nullptr) return *detached_counters_.emplace_back(std::make_unique<Counter>());
  auto& slot = family->counters[labels];
  if (!slot) slot = std::make_unique<Counter>();
  return *slot;
}

Gauge& Registry::GetGauge(const std::string& name, const std::string& help, const Labels& labels) {
  std::lock_guard<std::mutex> lock(mu_);
  Family* family = FamilyFor(name, MetricType::kGauge, help, {});
  if (family == nullptr) return *detached_gauges_.emplace_back(std::make_unique<Gauge>());
  auto& slot = family->gauges[labels];
  if (!slot) slot = std::make_unique<Gauge>();
  return *slot;
}

Histogram& Registry::GetHistogram(const std::string& name, const std::string& help,
                                  const Labels& labels, const std::vector<double>& upper_bounds) {
  std::lock_guard<std::mutex> lock(mu_);
  Family* family = FamilyFor(name, MetricType::kHistogram, help, upper_bounds);
  if (family == nullptr) {
    return *detached_histograms_.emplace_back(std::make_unique<Histogram>(upper_bounds));
  }
  auto& slot = family->histograms[labels];
  if (!slot) slot = std::make_unique<Histogram>(family->upper_bounds);
  return *slot;
}

std::string Registry::Render() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  for (const auto& [name, family] : families_) {
    out += "# HELP " + name + " " + Escape(family.help, /*quote=*/false) + "\n";
    out += "# TYPE " + name + " " + TypeName(family.type) + "\n";
    for (const auto& [labels, counter] : family.counters) {
      out += name + LabelText(labels) + " " + FormatValue(counter->Value()) + "\n";
    }
    for (const auto& [labels, gauge] : family.gauges) {
      out += name + LabelText(labels) + " " + FormatValue(gauge->Value()) + "\n";
    }
    for (const auto& [labels, histogram] : family.histograms) {
      Histogram::Snapshot s = histogram->Read();
      for (size_t i = 0; i < s.cumulative_counts.size(); ++i) {
        std::string le = i < s.upper_bounds.size() ? FormatValue(s.upper_bounds[i]) : "+Inf";
        out += name + "_bucket" + LabelText(labels, "le", le) + " " +
               FormatValue(static_cast<double>(s.cumulative_counts[i])) + "\n";
      }
      out += name + "_sum" + LabelText(labels) + " " + FormatValue(s.sum) + "\n";
      out += name + "_count" + LabelText(labels) + " " +
             FormatValue(static_cast<double>(s.count)) + "\n";
    }
  }
  return out;
}

Registry& GlobalRegistry() {
  static Registry* registry = new Registry();  // never destroyed: exporters may outlive main's locals
  return *registry;
}

void UpdateProcessMetrics(Registry& registry) {
  std::ifstream statm("/proc/self/statm");
  long total_pages = 0, resident_pages = 0;
  if (statm >> total_pages >> resident_pages) {
    registry.GetGauge(names::kProcessResidentMemoryBytes.name, names::kProcessResidentMemoryBytes.help)
        .Set(static_cast<double>(resident_pages) * static_cast<double>(sysconf(_SC_PAGESIZE)));
  }
}

}  // namespace ptq::metrics
