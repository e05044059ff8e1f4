#include "core/checkpoint/gptq_checkpoint_writer.h"

#include <ATen/ATen.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/gptq_format.h"
#include "common/status_macros.h"
#include "core/checkpoint/tensor_bytes.h"
#include "nlohmann/json.hpp"

namespace ptq {
absl::Status GptqCheckpointWriter::AddQuantized(const std::string& weight_name,
                                                const QuantizedLinear& q) {
  if (!absl::EndsWith(weight_name, ".weight")) {
    return absl::InvalidArgumentError(absl::StrCat(weight_name, " is not a weight name"));
  }
  const std::string prefix = weight_name.substr(0, weight_name.size() - 7);
  const int64_t n = q.codes.size(0);  // out
  const int64_t k = q.codes.size(1);  // in
  const int64_t groups = q.scales.size(1);
  if (q.bits != o_.bits) return absl::InvalidArgumentError(absl::StrCat(prefix, ": bits mismatch"));
  // qweight: codes transposed to [in, out], packed down the input dimension.
  at::Tensor codes_t = q.codes.t().contiguous();
  std::vector<uint8_t> codes(codes_t.data_ptr<uint8_t>(), codes_t.data_ptr<uint8_t>() + k * n);
  auto qweight = gptq::PackRows(codes, k, n, o_.bits);
  if (!qweight.ok()) return absl::InvalidArgumentError(absl::StrCat(prefix, ".qweight: ", qweight.status().message()));
  // qzeros: [groups, out] packed along the output dimension; the classic format stores zero - 1.
  at::Tensor zeros_t = q.zeros.t().contiguous();  // [groups, out] float
  std::vector<uint8_t> zeros(groups * n);
  const float* pz = zeros_t.data_ptr<float>();
  for (int64_t i = 0; i < groups * n; ++i) {
    // Fast kernels (ExLlama, Marlin) never read qzeros of a symmetric checkpoint: they assume
    // 2^(b-1), so a symmetric checkpoint must hold exactly that (docs/formats.md).
    if (o_.sym && pz[i] != static_cast<float>(1 << (o_.bits - 1))) {
      return absl::FailedPreconditionError(absl::StrCat(
          prefix, ": symmetric checkpoint with zero point ", pz[i], " (must be ", 1 << (o_.bits - 1), ")"));
    }
    int z = static_cast<int>(pz[i]) - (o_.v2 ? 0 : 1);
    if (z < 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          prefix, ": an asymmetric zero point of 0 cannot be stored in the classic GPTQ format "
                  "(quantize with GridOptions::min_zero = 1 or write gptq_v2)"));
    }
    zeros[i] = static_cast<uint8_t>(z);
  }
  auto qzeros = gptq::PackCols(zeros, groups, n, o_.bits);
  if (!qzeros.ok()) return absl::InvalidArgumentError(absl::StrCat(prefix, ".qzeros: ", qzeros.status().message()));
  PTQ_RETURN_IF_ERROR(shards_.Add(prefix + ".qweight", DType::kI32, {k * o_.bits / 32, n}, VectorBytes(*qweight)));
  PTQ_RETURN_IF_ERROR(shards_.Add(prefix + ".qzeros", DType::kI32, {groups, n * o_.bits / 32}, VectorBytes(*qzeros)));
  PTQ_RETURN_IF_ERROR(shards_.Add(prefix + ".scales", DType::kF16, {groups, n},
                                  TensorBytes(q.scales.t().to(at::kHalf))));
  return shards_.Add(prefix + ".g_idx", DType::kI32, {k}, TensorBytes(q.g_idx.to(at::kInt)));
}

absl::Status GptqCheckpointWriter::AddTensor(const TensorView& view) {
  return shards_.Add(view.name, view.dtype, view.shape,
                     std::vector<uint8_t>(view.data, view.data + view.num_bytes));
}

absl::Status GptqCheckpointWriter::Finish() {
  PTQ_RETURN_IF_ERROR(shards_.Finish());
  nlohmann::json qc = {{"quant_method", "gptq"},
                       {"bits", o_.bits},
                       {"group_size", o_.group_size > 0 ? o_.group_size : -1},
                       {"desc_act", o_.desc_act},
                       {"static_groups", o_.static_groups},
                       {"sym", o_.sym},
                       {"true_sequential", true},
                       {"damp_percent", o_.damp_percent},
                       {"checkpoint_format", o_.v2 ? "gptq_v2" : "gptq"}};
  if (!o_.ptq_json.empty()) qc["ptq"] = nlohmann::json::parse(o_.ptq_json);
  nlohmann::json config = nlohmann::json::parse(o_.config_json);
  config["quantization_config"] = qc;
  PTQ_RETURN_IF_ERROR(WriteFileAtomically(o_.dir + "/config.json", config.dump(2) + "\n"));
  PTQ_RETURN_IF_ERROR(WriteFileAtomically(o_.dir + "/quantize_config.json", qc.dump(2) + "\n"));
  return CopyTokenizerFiles(o_.source_dir, o_.dir);
}

}  // namespace ptq
