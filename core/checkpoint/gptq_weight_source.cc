#include "core/checkpoint/gptq_weight_source.h"

#include <ATen/ATen.h>

#include <cstring>
#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/gptq_format.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace ptq {
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
  // A checkpoint is untrusted input: every field's type is checked before it is read (nlohmann's
  // value() and get() throw on a mismatch), and the parse never throws.
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("quantization_config is not a JSON object");
  }
  auto string_field = [&](const char* key, const std::string& fallback) -> std::optional<std::string> {
    if (!j.contains(key)) return fallback;
    if (!j[key].is_string()) return std::nullopt;
    return j[key].get<std::string>();
  };
  const std::optional<std::string> method = string_field("quant_method", "");
  if (!method || *method != "gptq") {
    return absl::UnimplementedError(absl::StrCat("unsupported quant_method ",
                                                 j.contains("quant_method") ? j["quant_method"].dump() : "\"\"",
                                                 " in quantization_config (supported: gptq, compressed-tensors)"));
  }
  GptqConfig c;
  const nlohmann::json bits = j.contains("bits") ? j["bits"] : nlohmann::json();
  if (!bits.is_number_integer() || bits.get<int64_t>() < 0 || bits.get<int64_t>() > 64 ||
      !gptq::SupportedBits(static_cast<int>(bits.get<int64_t>()))) {
    return absl::InvalidArgumentError(
        absl::StrCat("quantization_config bits ", bits.dump(), " unsupported (2, 3, 4 or 8)"));
  }
  c.bits = static_cast<int>(bits.get<int64_t>());
  if (j.contains("group_size")) {
    const nlohmann::json& g = j["group_size"];
    if (!g.is_number_integer() || (g.get<int64_t>() != -1 && g.get<int64_t>() <= 0)) {
      return absl::InvalidArgumentError(absl::StrCat("quantization_config group_size ", g.dump(),
                                                     " invalid (-1 for per channel, or positive)"));
    }
    c.group_size = g.get<int64_t>();
  } else {
    c.group_size = -1;
  }
  const std::optional<std::string> format = string_field("checkpoint_format", "gptq");
  if (!format || (*format != "gptq" && *format != "gptq_v2")) {
    return absl::UnimplementedError(absl::StrCat("unsupported checkpoint_format ",
                                                 j["checkpoint_format"].dump()));
  }
  c.v2 = *format == "gptq_v2";
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

}  // namespace ptq
