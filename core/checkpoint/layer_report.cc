#include "core/checkpoint/layer_report.h"

#include <algorithm>
#include <cmath>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace ptq {
namespace {

std::string EscapeXml(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

// "model.layers.3.self_attn.q_proj.weight" -> "3 self_attn.q_proj"
std::string ShortName(const std::string& name) {
  std::string s = name;
  const std::string prefix = "model.layers.";
  if (s.rfind(prefix, 0) == 0) s = s.substr(prefix.size());
  const size_t dot = s.find('.');
  if (dot != std::string::npos) s[dot] = ' ';
  const std::string suffix = ".weight";
  if (s.size() > suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0) {
    s.resize(s.size() - suffix.size());
  }
  return s;
}

}  // namespace

nlohmann::json LayerReportJson(const QuantizeReport& r) {
  nlohmann::json layers = nlohmann::json::array();
  for (const LayerReport& l : r.layers) {
    layers.push_back({{"name", l.name},
                      {"loss", l.loss},
                      {"relative_loss", l.relative_loss},
                      {"rtn_loss", l.rtn_loss},
                      {"rtn_relative_loss", l.rtn_relative_loss},
                      {"seconds", l.seconds}});
  }
  nlohmann::json j = {{"layers", layers}, {"block_seconds", r.block_seconds}, {"seconds", r.seconds}};
  if (r.perplexity_fp >= 0) j["perplexity_fp"] = r.perplexity_fp;
  if (r.perplexity_quant >= 0) j["perplexity_quant"] = r.perplexity_quant;
  if (!r.serving_json.empty()) j["serving"] = nlohmann::json::parse(r.serving_json);
  return j;
}

std::string LayerReportSvg(const QuantizeReport& r, const std::string& title) {
  constexpr int kLabelWidth = 190, kChartWidth = 520, kTimeWidth = 80, kRow = 22, kTop = 60;
  const int width = kLabelWidth + kChartWidth + kTimeWidth + 20;
  const int height = kTop + kRow * static_cast<int>(r.layers.size()) + 40;
  // Log scale over the decades the relative losses span.
  double lo = 1.0, hi = 1e-12;
  for (const LayerReport& l : r.layers) {
    for (double v : {l.relative_loss, l.rtn_relative_loss}) {
      if (v > 0) {
        lo = std::min(lo, v);
        hi = std::max(hi, v);
      }
    }
  }
  if (hi < lo) hi = lo = 1e-3;
  const double d0 = std::floor(std::log10(lo)), d1 = std::max(d0 + 1, std::ceil(std::log10(hi)));
  auto x_of = [&](double v) {
    if (v <= 0) return 0.0;
    return kChartWidth * (std::log10(v) - d0) / (d1 - d0);
  };
  std::string svg = absl::StrFormat(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" "
      "font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
      "<text x=\"10\" y=\"20\" font-size=\"15\">%s</text>\n"
      "<text x=\"10\" y=\"40\">relative reconstruction loss per layer (log scale): "
      "<tspan fill=\"#999\">&#9632; round-to-nearest</tspan> <tspan fill=\"#1f77b4\">&#9632; "
      "this checkpoint</tspan>; seconds at the right</text>\n",
      width, height, EscapeXml(title));
  for (double d = d0; d <= d1; d += 1) {
    const double x = kLabelWidth + x_of(std::pow(10.0, d));
    absl::StrAppendFormat(&svg,
                          "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#ddd\"/>"
                          "<text x=\"%.1f\" y=\"%d\" fill=\"#666\" text-anchor=\"middle\">1e%d</text>\n",
                          x, kTop - 8, x, height - 30, x, height - 15, static_cast<int>(d));
  }
  int y = kTop;
  for (const LayerReport& l : r.layers) {
    absl::StrAppendFormat(&svg, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%s</text>\n",
                          kLabelWidth - 6, y + 14, EscapeXml(ShortName(l.name)));
    absl::StrAppendFormat(&svg,
                          "<rect x=\"%d\" y=\"%d\" width=\"%.1f\" height=\"8\" fill=\"#999\">"
                          "<title>RTN %.4g</title></rect>\n",
                          kLabelWidth, y + 2, x_of(l.rtn_relative_loss), l.rtn_relative_loss);
    absl::StrAppendFormat(&svg,
                          "<rect x=\"%d\" y=\"%d\" width=\"%.1f\" height=\"8\" fill=\"#1f77b4\">"
                          "<title>%.4g</title></rect>\n",
                          kLabelWidth, y + 11, x_of(l.relative_loss), l.relative_loss);
    absl::StrAppendFormat(&svg, "<text x=\"%d\" y=\"%d\" fill=\"#666\">%.2f s</text>\n",
                          kLabelWidth + kChartWidth + 10, y + 14, l.seconds);
    y += kRow;
  }
  svg += "</svg>\n";
  return svg;
}

absl::Status WriteLayerReport(const std::string& dir, const QuantizeReport& report,
                              const std::string& title) {
  const std::pair<std::string, std::string> files[] = {
      {dir + "/ptq_report.json", LayerReportJson(report).dump(2) + "\n"},
      {dir + "/ptq_report.svg", LayerReportSvg(report, title)}};
  for (const auto& [path, text] : files) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << text;
    out.flush();
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", path, " (disk full?)"));
  }
  return absl::OkStatus();
}

}  // namespace ptq
