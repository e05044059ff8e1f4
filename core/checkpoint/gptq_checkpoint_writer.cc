#include "core/checkpoint/gptq_checkpoint_writer.h"

#include <ATen/ATen.h>

#include <cstdio>
#include <cstring>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/gptq_format.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace ptq {
namespace {

template <typename T>
std::vector<uint8_t> Bytes(const std::vector<T>& v) {
  std::vector<uint8_t> b(v.size() * sizeof(T));
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

std::vector<uint8_t> TensorBytes(const at::Tensor& t) {
  at::Tensor c = t.contiguous();
  std::vector<uint8_t> b(c.numel() * c.element_size());
  std::memcpy(b.data(), c.data_ptr(), b.size());
  return b;
}

}  // namespace

absl::Status GptqCheckpointWriter::Add(const std::string& name, DType dtype,
                                       std::vector<int64_t> shape, std::vector<uint8_t> bytes) {
  if (!shard_names_.empty() && shard_->num_bytes() + bytes.size() > o_.max_shard_bytes) {
    PTQ_RETURN_IF_ERROR(FlushShard());
  }
  total_bytes_ += bytes.size();
  shard_of_[name] = shard_files_.size();
  shard_names_.push_back(name);
  return shard_->AddTensor(name, dtype, std::move(shape), std::move(bytes));
}

absl::Status GptqCheckpointWriter::FlushShard() {
  std::string path = absl::StrFormat("%s/shard-%05d.partial.safetensors", o_.dir, shard_files_.size());
  PTQ_RETURN_IF_ERROR(shard_->Finish(path));
  shard_files_.push_back(path);
  shard_ = std::make_unique<SafetensorsWriter>();
  shard_names_.clear();
  return absl::OkStatus();
}

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
  PTQ_RETURN_IF_ERROR(Add(prefix + ".qweight", DType::kI32, {k * o_.bits / 32, n}, Bytes(*qweight)));
  PTQ_RETURN_IF_ERROR(Add(prefix + ".qzeros", DType::kI32, {groups, n * o_.bits / 32}, Bytes(*qzeros)));
  PTQ_RETURN_IF_ERROR(Add(prefix + ".scales", DType::kF16, {groups, n},
                          TensorBytes(q.scales.t().to(at::kHalf))));
  return Add(prefix + ".g_idx", DType::kI32, {k}, TensorBytes(q.g_idx.to(at::kInt)));
}

absl::Status GptqCheckpointWriter::AddTensor(const TensorView& view) {
  return Add(view.name, view.dtype, view.shape,
             std::vector<uint8_t>(view.data, view.data + view.num_bytes));
}

absl::Status GptqCheckpointWriter::Finish() {
  namespace fs = std::filesystem;
  PTQ_RETURN_IF_ERROR(FlushShard());
  const size_t count = shard_files_.size();
  std::vector<std::string> final_names;
  for (size_t i = 0; i < count; ++i) {
    final_names.push_back(count == 1 ? "model.safetensors"
                                     : absl::StrFormat("model-%05d-of-%05d.safetensors", i + 1, count));
    std::error_code ec;
    fs::rename(shard_files_[i], o_.dir + "/" + final_names.back(), ec);
    if (ec) return absl::UnavailableError(absl::StrCat("cannot rename ", shard_files_[i], ": ", ec.message()));
  }
  if (count > 1) {
    nlohmann::json index;
    index["metadata"] = {{"total_size", total_bytes_}};
    index["weight_map"] = nlohmann::json::object();
    for (const auto& [name, shard] : shard_of_) index["weight_map"][name] = final_names[shard];
    PTQ_RETURN_IF_ERROR(WriteFileAtomically(o_.dir + "/model.safetensors.index.json", index.dump(2) + "\n"));
  }
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
  for (const char* name : {"tokenizer.model", "tokenizer.json", "tokenizer_config.json",
                           "special_tokens_map.json", "generation_config.json", "vocab.json",
                           "merges.txt", "added_tokens.json"}) {
    fs::path src = fs::path(o_.source_dir) / name;
    std::error_code ec;
    if (fs::exists(src, ec)) {
      fs::copy_file(src, fs::path(o_.dir) / name, fs::copy_options::overwrite_existing, ec);
      if (ec) return absl::UnavailableError(absl::StrCat("cannot copy ", src.string(), ": ", ec.message()));
    }
  }
  return absl::OkStatus();
}

}  // namespace ptq
