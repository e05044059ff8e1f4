// The per-layer report's SVG: one row per layer, bar lengths on the log scale the axis states.
#include <gtest/gtest.h>

#include <cmath>
#include <regex>

#include "core/checkpoint/layer_report.h"

namespace ptq {
namespace {

std::vector<double> RectWidths(const std::string& svg) {
  std::vector<double> widths;
  std::regex rect("<rect x=\"190\" y=\"[0-9]+\" width=\"([0-9.]+)\"");
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), rect); it != std::sregex_iterator(); ++it) {
    widths.push_back(std::stod((*it)[1]));
  }
  return widths;
}

TEST(LayerReportTest, BarsFollowTheLogScale) {
  QuantizeReport r;
  LayerReport a;
  a.name = "model.layers.0.self_attn.q_proj.weight";
  a.relative_loss = 1e-3;
  a.rtn_relative_loss = 1e-2;
  LayerReport b;
  b.name = "model.layers.1.mlp.down_proj.weight";
  b.relative_loss = 1e-2;
  b.rtn_relative_loss = 1e-1;
  r.layers = {a, b};
  const std::string svg = LayerReportSvg(r, "t <&>");
  EXPECT_NE(svg.find("t &lt;&amp;&gt;"), std::string::npos);
  EXPECT_NE(svg.find(">0 self_attn.q_proj<"), std::string::npos);
  EXPECT_NE(svg.find(">1 mlp.down_proj<"), std::string::npos);
  // Decades 1e-3 .. 1e-1 over 520 px: 1e-3 -> 0, 1e-2 -> 260, 1e-1 -> 520. RTN bar first per row.
  std::vector<double> w = RectWidths(svg);
  ASSERT_EQ(w.size(), 4u);
  EXPECT_NEAR(w[0], 260, 0.1);
  EXPECT_NEAR(w[1], 0, 0.1);
  EXPECT_NEAR(w[2], 520, 0.1);
  EXPECT_NEAR(w[3], 260, 0.1);
  nlohmann::json j = LayerReportJson(r);
  EXPECT_EQ(j["layers"].size(), 2u);
  EXPECT_FALSE(j.contains("perplexity_quant"));
}

}  // namespace
}  // namespace ptq
