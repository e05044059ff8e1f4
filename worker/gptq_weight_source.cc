#include "worker/gptq_weight_source.h"

#include <ATen/ATen.h>

#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/gptq_format.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace ptq::worker {
namespace {

std::string QuantPrefix(const std::string& name) {
  return absl::EndsWith(name, ".weight") ? name.substr(0, name.size() - 7) : std::string();
}

absl::StatusOr<TensorView> GetChecked(const ModelFiles& files, const std::string& name, DType dtype,
                                      size_t dims) {
  auto view = files.Get(name);
  if (!view.ok()) {
    return absl::NotFoundError(absl::StrCat("GPTQ checkpoint lacks tensor ", name));
  }
  if (view->dtype != dtype || view->shape.size() != dims) {
    return absl::DataLossError(absl::StrCat("GPTQ tensor ", name, " has dtype ",
                                            std::string(DTypeName(view->dtype)), " and shape [",
                                            absl::StrJoin(view->shape, ", "), "], expected ",
                                            std::string(DTypeName(dtype)), " with ", dims, " dims"));
  }
  return view;
}

std::vector<int32_t> Words(const TensorView& v) {
  std::vector<int32_t> w(v.num_bytes / 4);
  std::memcpy(w.data(), v.data, v.num_bytes);
  return w;
}

}  // namespace

absl::StatusOr<GptqConfig> ParseGptqConfig(const std::string& text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("quantization_config is not valid JSON: ", e.what()));
  }
  std::string method = j.value("quant_method", std::string());
  if (method != "gptq") {
    return absl::UnimplementedError(absl::StrCat("unsupported quant_method \"", method,
                                                 "\" in quantization_config (supported: gptq)"));
  }
  GptqConfig c;
  if (!j.contains("bits") || !j["bits"].is_number_integer() || !gptq::SupportedBits(j["bits"].get<int>())) {
    return absl::InvalidArgumentError(absl::StrCat("quantization_config bits ", j.value("bits", nlohmann::json()).dump(),
                                                   " unsupported (2, 3, 4 or 8)"));
  }
  c.bits = j["bits"].get<int>();
  c.group_size = j.value("group_size", int64_t{-1});
  std::string format = j.value("checkpoint_format", std::string("gptq"));
  if (format != "gptq" && format != "gptq_v2") {
    return absl::UnimplementedError(absl::StrCat("unsupported checkpoint_format \"", format, "\""));
  }
  c.v2 = format == "gptq_v2";
  return c;
}

bool GptqWeightSource::Has(const std::string& name) const {
  const std::string prefix = QuantPrefix(name);
  return files_->Has(name) || (!prefix.empty() && files_->Has(prefix + ".qweight"));
}

absl::StatusOr<at::Tensor> GptqWeightSource::LoadFloat(const std::string& name) const {
  const std::string prefix = QuantPrefix(name);
  if (prefix.empty() || !files_->Has(prefix + ".qweight")) {
    PTQ_ASSIGN_OR_RETURN(TensorView view, files_->Get(name));
    return TensorFromView(view);
  }
  const int bits = config_.bits;
  PTQ_ASSIGN_OR_RETURN(TensorView qweight, GetChecked(*files_, prefix + ".qweight", DType::kI32, 2));
  PTQ_ASSIGN_OR_RETURN(TensorView qzeros, GetChecked(*files_, prefix + ".qzeros", DType::kI32, 2));
  PTQ_ASSIGN_OR_RETURN(TensorView scales, GetChecked(*files_, prefix + ".scales", DType::kF16, 2));
  const int64_t n = qweight.shape[1];
  const int64_t k = qweight.shape[0] * 32 / bits;
  const int64_t groups = scales.shape[0];
  if (scales.shape[1] != n || qzeros.shape[0] != groups || qzeros.shape[1] * 32 != n * bits) {
    return absl::DataLossError(absl::StrCat("GPTQ tensors of ", prefix,
                                            " disagree: qweight [", absl::StrJoin(qweight.shape, ", "),
                                            "], qzeros [", absl::StrJoin(qzeros.shape, ", "),
                                            "], scales [", absl::StrJoin(scales.shape, ", "), "] at ",
                                            bits, " bits"));
  }
  at::Tensor g_idx;
  if (files_->Has(prefix + ".g_idx")) {
    PTQ_ASSIGN_OR_RETURN(TensorView gv, GetChecked(*files_, prefix + ".g_idx", DType::kI32, 1));
    if (gv.shape[0] != k) {
      return absl::DataLossError(absl::StrCat(prefix, ".g_idx has ", gv.shape[0], " entries, expected ", k));
    }
    PTQ_ASSIGN_OR_RETURN(g_idx, BorrowTensor(gv));
    g_idx = g_idx.to(at::kLong);
  } else {
    const int64_t g = config_.group_size > 0 ? config_.group_size : k;
    g_idx = at::arange(k, at::kLong).div(g, "floor");
  }
  if (g_idx.numel() > 0 && (g_idx.min().item<int64_t>() < 0 || g_idx.max().item<int64_t>() >= groups)) {
    return absl::DataLossError(absl::StrCat(prefix, ".g_idx points outside the ", groups, " groups"));
  }
  PTQ_ASSIGN_OR_RETURN(auto codes, gptq::UnpackRows(Words(qweight), k, n, bits));
  PTQ_ASSIGN_OR_RETURN(auto zeros, gptq::UnpackCols(Words(qzeros), groups, n, bits));
  at::Tensor q = at::from_blob(codes.data(), {k, n}, at::kByte).to(at::kFloat);
  // Classic checkpoints store zero - 1 and every loader adds the 1 back (docs/formats.md).
  at::Tensor z = at::from_blob(zeros.data(), {groups, n}, at::kByte).to(at::kFloat) + (config_.v2 ? 0 : 1);
  PTQ_ASSIGN_OR_RETURN(at::Tensor s, BorrowTensor(scales));
  s = s.to(at::kFloat);
  at::Tensor w = s.index_select(0, g_idx) * (q - z.index_select(0, g_idx));  // [k, n]
  return w.t().contiguous();
}

}  // namespace ptq::worker
