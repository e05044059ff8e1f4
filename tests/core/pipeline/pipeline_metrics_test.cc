// The one-process pipeline records its progress in the process-wide metrics registry.
#include "core/pipeline/pipeline_metrics.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "common/metric_names.h"
#include "tests/test_paths.h"
#include "core/pipeline/quantize_pipeline.h"

namespace ptq {
namespace {
namespace fs = std::filesystem;

TEST(PipelineMetricsTest, QuantizeExportsBlocksLayersPhasesAndLosses) {
  fs::path out = fs::temp_directory_path() / "ptq_pipeline_metrics_test";
  fs::remove_all(out);
  QuantizeOptions o;
  o.model_dir = testing::DemoModelDir();
  o.calib_path = testing::DemoCalibText();
  o.out_dir = out.string();
  o.samples = 4;
  o.seq_len = 64;
  o.partial_groups = true;
  o.eval_fp = false;
  auto report = RunQuantize(o);
  ASSERT_TRUE(report.ok()) << report.status().message();
  fs::remove_all(out);

  metrics::Registry& r = metrics::GlobalRegistry();
  const metrics::Labels job = {{"job_id", "local"}};
  const int blocks = 4, layers = static_cast<int>(report->layers.size());
  EXPECT_EQ(layers, blocks * 7);
  EXPECT_EQ(metrics::CounterFor(r, metrics::names::kBlocksDone, job).Value(), blocks);
  EXPECT_EQ(metrics::CounterFor(r, metrics::names::kLayersDone, job).Value(), layers);
  EXPECT_DOUBLE_EQ(metrics::GaugeFor(r, metrics::names::kJobProgressRatio, job).Value(), 1.0);
  EXPECT_EQ(metrics::CounterFor(r, metrics::names::kCalibrationTokens, job).Value(), blocks * 4 * 64);
  EXPECT_GT(metrics::GaugeFor(r, metrics::names::kCalibrationTokensPerSecond, job).Value(), 0);
  // Phase counters add up to the report's totals (the embedding forward happens before block 0 and
  // is counted in the first block's forward share).
  EXPECT_NEAR(metrics::CounterFor(r, metrics::names::kPhaseSeconds, {{"job_id", "local"}, {"phase", "statistics"}}).Value(),
              report->statistics_seconds, 1e-9);
  EXPECT_NEAR(metrics::CounterFor(r, metrics::names::kPhaseSeconds, {{"job_id", "local"}, {"phase", "quantize"}}).Value(),
              report->quantize_seconds, 1e-9);
  // The last layer's loss is the report's.
  const LayerReport& last = report->layers.back();  // model.layers.3.<layer>.weight
  const std::string prefix = "model.layers.3.", suffix = ".weight";
  ASSERT_EQ(last.name.rfind(prefix, 0), 0u) << last.name;
  const std::string layer =
      last.name.substr(prefix.size(), last.name.size() - prefix.size() - suffix.size());
  EXPECT_EQ(metrics::GaugeFor(r, metrics::names::kLayerLoss,
                              {{"job_id", "local"}, {"block", "3"}, {"layer", layer}})
                .Value(),
            last.loss);
  EXPECT_GT(last.loss, 0);
  const std::string text = r.Render();
  EXPECT_NE(text.find("ptq_block_duration_seconds_count{job_id=\"local\"} 4\n"), std::string::npos) << text;
}

}  // namespace
}  // namespace ptq
