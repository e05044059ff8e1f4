// The per-layer report written next to every checkpoint: where the quantization error went. For
// each linear layer the reconstruction loss of plain rounding (RTN, same grid) and of the chosen
// method, relative to tr(W H W^T), and the seconds it took; as JSON (ptq_report.json) and as an SVG
// chart (ptq_report.svg) a browser opens. Hugging Face and vLLM ignore both files.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "nlohmann/json.hpp"
#include "core/pipeline/quantize_pipeline.h"

namespace ptq {

nlohmann::json LayerReportJson(const QuantizeReport& report);

// Horizontal bars, one row per layer, relative losses on a log scale (RTN grey, method blue).
std::string LayerReportSvg(const QuantizeReport& report, const std::string& title);

// Writes ptq_report.json and ptq_report.svg into `dir`.
absl::Status WriteLayerReport(const std::string& dir, const QuantizeReport& report,
                              const std::string& title);

}  // namespace ptq
