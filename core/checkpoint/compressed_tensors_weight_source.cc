#include "core/checkpoint/compressed_tensors_weight_source.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/pack_quantized_format.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace ptq {
namespace {

std::string QuantPrefix(const std::string& name) {
  return absl::EndsWith(name, ".weight") ? name.substr(0, name.size() - 7) : std::string();
}

absl::StatusOr<TensorView> GetChecked(const ModelFiles& files, const std::string& name, DType dtype,
                                      std::vector<int64_t> shape) {
  auto view = files.Get(name);
  if (!view.ok()) return absl::NotFoundError(absl::StrCat("compressed-tensors checkpoint lacks ", name));
  if (view->dtype != dtype || view->shape != shape) {
    return absl::DataLossError(absl::StrCat(name, " has dtype ", std::string(DTypeName(view->dtype)),
                                            " and shape [", absl::StrJoin(view->shape, ", "),
                                            "], expected ", std::string(DTypeName(dtype)), " [",
                                            absl::StrJoin(shape, ", "), "]"));
  }
  return view;
}

std::vector<int32_t> Words(const TensorView& v) {
  std::vector<int32_t> w(v.num_bytes / 4);
  std::memcpy(w.data(), v.data, v.num_bytes);
  return w;
}

}  // namespace

absl::StatusOr<CompressedTensorsConfig> ParseCompressedTensorsConfig(const std::string& text) {
  // Untrusted input: every field's type is checked before it is read, and the parse never throws.
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("quantization_config is not a JSON object");
  }
  auto is = [](const nlohmann::json& o, const char* key, const char* value) {
    return o.is_object() && o.contains(key) && o[key].is_string() && o[key].get<std::string>() == value;
  };
  if (!is(j, "quant_method", "compressed-tensors")) {
    return absl::InvalidArgumentError("quantization_config is not compressed-tensors");
  }
  if (!is(j, "format", "pack-quantized")) {
    return absl::UnimplementedError(absl::StrCat("compressed-tensors format ",
                                                 j.contains("format") ? j["format"].dump() : "(none)",
                                                 " is not read (supported: pack-quantized)"));
  }
  if (!j.contains("config_groups") || !j["config_groups"].is_object() || j["config_groups"].size() != 1) {
    return absl::UnimplementedError("compressed-tensors: exactly one config group is read");
  }
  const nlohmann::json& group = j["config_groups"].begin().value();
  if (!group.is_object() || !group.contains("weights") || !group["weights"].is_object()) {
    return absl::InvalidArgumentError("compressed-tensors config group without weights");
  }
  for (const char* key : {"input_activations", "output_activations"}) {
    if (group.contains(key) && !group[key].is_null()) {
      return absl::UnimplementedError(absl::StrCat("compressed-tensors ", key, " are not read"));
    }
  }
  const nlohmann::json& w = group["weights"];
  if (!is(w, "type", "int")) return absl::UnimplementedError("compressed-tensors: only int weights are read");
  CompressedTensorsConfig c;
  if (!w.contains("num_bits") || !w["num_bits"].is_number_integer() ||
      !pack_quantized::SupportedBits(static_cast<int>(std::clamp<int64_t>(w["num_bits"].get<int64_t>(), 0, 64)))) {
    return absl::InvalidArgumentError(absl::StrCat("compressed-tensors num_bits ",
                                                   w.contains("num_bits") ? w["num_bits"].dump() : "(none)",
                                                   " unsupported (1 to 8)"));
  }
  c.bits = static_cast<int>(w["num_bits"].get<int64_t>());
  if (w.contains("symmetric")) {
    if (!w["symmetric"].is_boolean()) return absl::InvalidArgumentError("symmetric is not a boolean");
    c.sym = w["symmetric"].get<bool>();
  }
  if (is(w, "strategy", "group")) {
    if (!w.contains("group_size") || !w["group_size"].is_number_integer() || w["group_size"].get<int64_t>() <= 0) {
      return absl::InvalidArgumentError("compressed-tensors group strategy without a positive group_size");
    }
    c.group_size = w["group_size"].get<int64_t>();
  } else if (!is(w, "strategy", "channel")) {
    return absl::UnimplementedError(absl::StrCat("compressed-tensors strategy ",
                                                 w.contains("strategy") ? w["strategy"].dump() : "(none)",
                                                 " is not read (supported: group, channel)"));
  }
  return c;
}

bool CompressedTensorsWeightSource::Has(const std::string& name) const {
  const std::string prefix = QuantPrefix(name);
  return files_->Has(name) || (!prefix.empty() && files_->Has(prefix + ".weight_packed"));
}

absl::StatusOr<at::Tensor> CompressedTensorsWeightSource::LoadFloat(const std::string& name) const {
  const std::string prefix = QuantPrefix(name);
  if (prefix.empty() || !files_->Has(prefix + ".weight_packed")) {
    PTQ_ASSIGN_OR_RETURN(TensorView view, files_->Get(name));
    return TensorFromView(view);
  }
  const int bits = config_.bits;
  PTQ_ASSIGN_OR_RETURN(TensorView shape_view, GetChecked(*files_, prefix + ".weight_shape", DType::kI64, {2}));
  int64_t shape[2];
  std::memcpy(shape, shape_view.data, sizeof(shape));
  const int64_t n = shape[0], k = shape[1];
  if (n <= 0 || k <= 0 || n > (int64_t{1} << 24) || k > (int64_t{1} << 24)) {
    return absl::DataLossError(absl::StrCat(prefix, ".weight_shape [", n, ", ", k, "] is not a layer shape"));
  }
  const int64_t g = config_.group_size > 0 ? config_.group_size : k;
  if (k % g != 0) {
    return absl::DataLossError(absl::StrCat(prefix, ": group size ", g, " does not divide ", k, " inputs"));
  }
  const int64_t groups = k / g;
  PTQ_ASSIGN_OR_RETURN(TensorView packed, GetChecked(*files_, prefix + ".weight_packed", DType::kI32,
                                                     {n, pack_quantized::PackedWords(k, bits)}));
  PTQ_ASSIGN_OR_RETURN(auto codes, pack_quantized::UnpackRows(Words(packed), n, k, bits));
  auto scale_view = files_->Get(prefix + ".weight_scale");
  if (!scale_view.ok()) return absl::NotFoundError(absl::StrCat("checkpoint lacks ", prefix, ".weight_scale"));
  if (scale_view->shape != std::vector<int64_t>{n, groups}) {
    return absl::DataLossError(absl::StrCat(prefix, ".weight_scale has shape [",
                                            absl::StrJoin(scale_view->shape, ", "), "], expected [", n,
                                            ", ", groups, "]"));
  }
  PTQ_ASSIGN_OR_RETURN(at::Tensor s, TensorFromView(*scale_view));  // [n, groups]; F16, BF16 or F32
  at::Tensor z;
  if (config_.sym) {
    z = at::full({n, groups}, static_cast<float>(1 << (bits - 1)));
  } else {
    const int64_t words = pack_quantized::PackedWords(n, bits);
    PTQ_ASSIGN_OR_RETURN(TensorView zv, GetChecked(*files_, prefix + ".weight_zero_point", DType::kI32,
                                                   {words, groups}));
    PTQ_ASSIGN_OR_RETURN(at::Tensor zp, BorrowTensor(zv));
    at::Tensor zp_t = zp.t().contiguous();  // [groups, words]: each row packs one group's zeros
    std::vector<int32_t> zw(zp_t.data_ptr<int32_t>(), zp_t.data_ptr<int32_t>() + groups * words);
    PTQ_ASSIGN_OR_RETURN(auto zeros, pack_quantized::UnpackRows(zw, groups, n, bits));
    z = at::from_blob(zeros.data(), {groups, n}, at::kByte).to(at::kFloat).t().contiguous();
  }
  at::Tensor g_idx;
  if (files_->Has(prefix + ".weight_g_idx")) {
    PTQ_ASSIGN_OR_RETURN(TensorView gv, GetChecked(*files_, prefix + ".weight_g_idx", DType::kI32, {k}));
    PTQ_ASSIGN_OR_RETURN(g_idx, BorrowTensor(gv));
    g_idx = g_idx.to(at::kLong);
    if (g_idx.min().item<int64_t>() < 0 || g_idx.max().item<int64_t>() >= groups ||
        !at::equal(at::bincount(g_idx, {}, groups), at::full({groups}, g, at::kLong))) {
      return absl::DataLossError(absl::StrCat(prefix, ".weight_g_idx does not give each of the ",
                                              groups, " groups ", g, " columns"));
    }
  } else {
    g_idx = at::arange(k, at::kLong).div(g, "floor");
  }
  at::Tensor q = at::from_blob(codes.data(), {n, k}, at::kByte).to(at::kFloat);
  return (s.index_select(1, g_idx) * (q - z.index_select(1, g_idx))).contiguous();
}

}  // namespace ptq
