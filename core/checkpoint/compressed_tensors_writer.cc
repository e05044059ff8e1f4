#include "core/checkpoint/compressed_tensors_writer.h"

#include <ATen/ATen.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/pack_quantized_format.h"
#include "common/status_macros.h"
#include "core/checkpoint/tensor_bytes.h"
#include "nlohmann/json.hpp"

namespace ptq {
namespace {

// The compressed-tensors release whose pack-quantized layout this writer follows: 0.18.0 made the
// packing dense (3-bit values cross word boundaries); 2, 4 and 8 bits are the same in every release.
constexpr const char* kFormatVersion = "0.18.0";

nlohmann::json ConfigJson(const CompressedTensorsOptions& o) {
  const bool grouped = o.group_size > 0;
  nlohmann::json weights = {{"num_bits", o.bits},
                            {"type", "int"},
                            {"symmetric", o.sym},
                            {"group_size", grouped ? o.group_size : -1},
                            {"strategy", grouped ? "group" : "channel"},
                            {"block_structure", nullptr},
                            {"dynamic", false},
                            {"actorder", o.actorder.empty() ? nlohmann::json() : nlohmann::json(o.actorder)},
                            {"observer", "minmax"},
                            {"observer_kwargs", nlohmann::json::object()}};
  nlohmann::json group = {{"targets", {"Linear"}},
                          {"weights", weights},
                          {"input_activations", nullptr},
                          {"output_activations", nullptr},
                          {"format", "pack-quantized"}};
  nlohmann::json qc = {{"quant_method", "compressed-tensors"},
                       {"format", "pack-quantized"},
                       {"quantization_status", "compressed"},
                       {"config_groups", {{"group_0", group}}},
                       // Every Linear but the output head (embeddings are not Linear).
                       {"ignore", {"lm_head"}},
                       {"kv_cache_scheme", nullptr},
                       {"global_compression_ratio", nullptr},
                       {"sparsity_config", nlohmann::json::object()},
                       {"transform_config", nlohmann::json::object()},
                       {"version", kFormatVersion}};
  if (!o.ptq_json.empty()) qc["ptq"] = nlohmann::json::parse(o.ptq_json);
  return qc;
}

}  // namespace

std::string CompressedTensorsConfigJson(const CompressedTensorsOptions& options) {
  return ConfigJson(options).dump();
}

absl::Status CompressedTensorsWriter::AddQuantized(const std::string& weight_name,
                                                   const QuantizedLinear& q) {
  if (!absl::EndsWith(weight_name, ".weight")) {
    return absl::InvalidArgumentError(absl::StrCat(weight_name, " is not a weight name"));
  }
  const std::string prefix = weight_name.substr(0, weight_name.size() - 7);
  const int64_t n = q.codes.size(0);  // out
  const int64_t k = q.codes.size(1);  // in
  const int64_t groups = q.scales.size(1);
  const int bits = o_.bits;
  if (q.bits != bits) return absl::InvalidArgumentError(absl::StrCat(prefix, ": bits mismatch"));
  if (o_.group_size > 0 && k % o_.group_size != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        prefix, ": compressed-tensors cannot hold a shorter last group (", k, " inputs, groups of ",
        o_.group_size, ")"));
  }
  at::Tensor codes = q.codes.contiguous();
  PTQ_ASSIGN_OR_RETURN(std::vector<int32_t> packed,
                       pack_quantized::PackRows(std::vector<uint8_t>(codes.data_ptr<uint8_t>(),
                                                                     codes.data_ptr<uint8_t>() + n * k),
                                                n, k, bits));
  PTQ_RETURN_IF_ERROR(shards_.Add(prefix + ".weight_packed", DType::kI32,
                                  {n, pack_quantized::PackedWords(k, bits)}, VectorBytes(packed)));
  PTQ_RETURN_IF_ERROR(shards_.Add(prefix + ".weight_scale", DType::kF16, {n, groups},
                                  TensorBytes(q.scales.to(at::kHalf))));
  // Zero points: [groups, out] rows packed along the output dimension, stored transposed.
  at::Tensor zeros_t = q.zeros.t().contiguous();
  const float* pz = zeros_t.data_ptr<float>();
  std::vector<uint8_t> zeros(groups * n);
  const float mid = static_cast<float>(1 << (bits - 1));
  for (int64_t i = 0; i < groups * n; ++i) {
    // compressed-tensors stores no zero point for a symmetric grid: every consumer takes 2^(b-1).
    if (o_.sym && pz[i] != mid) {
      return absl::FailedPreconditionError(absl::StrCat(
          prefix, ": symmetric checkpoint with zero point ", pz[i], " (must be ", mid, ")"));
    }
    if (!(pz[i] >= 0 && pz[i] < static_cast<float>(1 << bits))) {
      return absl::FailedPreconditionError(absl::StrCat(prefix, ": zero point ", pz[i],
                                                        " outside the ", bits, "-bit range"));
    }
    zeros[i] = static_cast<uint8_t>(pz[i]);
  }
  if (!o_.sym) {
    PTQ_ASSIGN_OR_RETURN(std::vector<int32_t> packed_zeros,
                         pack_quantized::PackRows(zeros, groups, n, bits));
    const int64_t words = pack_quantized::PackedWords(n, bits);
    at::Tensor zp = at::from_blob(packed_zeros.data(), {groups, words}, at::kInt).t().contiguous();
    PTQ_RETURN_IF_ERROR(shards_.Add(prefix + ".weight_zero_point", DType::kI32, {words, groups},
                                    TensorBytes(zp)));
  }
  PTQ_RETURN_IF_ERROR(shards_.Add(prefix + ".weight_shape", DType::kI64, {2},
                                  VectorBytes(std::vector<int64_t>{n, k})));
  if (o_.actorder == "group") {
    PTQ_RETURN_IF_ERROR(shards_.Add(prefix + ".weight_g_idx", DType::kI32, {k},
                                    TensorBytes(q.g_idx.to(at::kInt))));
  }
  return absl::OkStatus();
}

absl::Status CompressedTensorsWriter::AddTensor(const TensorView& view) {
  return shards_.Add(view.name, view.dtype, view.shape,
                     std::vector<uint8_t>(view.data, view.data + view.num_bytes));
}

absl::Status CompressedTensorsWriter::Finish() {
  PTQ_RETURN_IF_ERROR(shards_.Finish());
  nlohmann::json config = nlohmann::json::parse(o_.config_json);
  config["quantization_config"] = ConfigJson(o_);
  PTQ_RETURN_IF_ERROR(WriteFileAtomically(o_.dir + "/config.json", config.dump(2) + "\n"));
  return CopyTokenizerFiles(o_.source_dir, o_.dir);
}

}  // namespace ptq
