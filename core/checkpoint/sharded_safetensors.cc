#include "core/checkpoint/sharded_safetensors.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace ptq {

absl::Status ShardedSafetensors::Add(const std::string& name, DType dtype, std::vector<int64_t> shape,
                                     std::vector<uint8_t> bytes) {
  if (!shard_names_.empty() && shard_->num_bytes() + bytes.size() > max_shard_bytes_) {
    PTQ_RETURN_IF_ERROR(FlushShard());
  }
  total_bytes_ += bytes.size();
  shard_of_[name] = shard_files_.size();
  shard_names_.push_back(name);
  return shard_->AddTensor(name, dtype, std::move(shape), std::move(bytes));
}

absl::Status ShardedSafetensors::FlushShard() {
  std::string path = absl::StrFormat("%s/shard-%05d.partial.safetensors", dir_, shard_files_.size());
  PTQ_RETURN_IF_ERROR(shard_->Finish(path));
  shard_files_.push_back(path);
  shard_ = std::make_unique<SafetensorsWriter>();
  shard_names_.clear();
  return absl::OkStatus();
}

absl::Status ShardedSafetensors::Finish() {
  namespace fs = std::filesystem;
  PTQ_RETURN_IF_ERROR(FlushShard());
  const size_t count = shard_files_.size();
  std::vector<std::string> final_names;
  for (size_t i = 0; i < count; ++i) {
    final_names.push_back(count == 1 ? "model.safetensors"
                                     : absl::StrFormat("model-%05d-of-%05d.safetensors", i + 1, count));
    std::error_code ec;
    fs::rename(shard_files_[i], dir_ + "/" + final_names.back(), ec);
    if (ec) return absl::UnavailableError(absl::StrCat("cannot rename ", shard_files_[i], ": ", ec.message()));
  }
  if (count > 1) {
    nlohmann::json index;
    index["metadata"] = {{"total_size", total_bytes_}};
    index["weight_map"] = nlohmann::json::object();
    for (const auto& [name, shard] : shard_of_) index["weight_map"][name] = final_names[shard];
    PTQ_RETURN_IF_ERROR(WriteFileAtomically(dir_ + "/model.safetensors.index.json", index.dump(2) + "\n"));
  }
  return absl::OkStatus();
}

absl::Status CopyTokenizerFiles(const std::string& source_dir, const std::string& dir) {
  namespace fs = std::filesystem;
  for (const char* name : {"tokenizer.model", "tokenizer.json", "tokenizer_config.json",
                           "special_tokens_map.json", "generation_config.json", "vocab.json",
                           "merges.txt", "added_tokens.json"}) {
    fs::path src = fs::path(source_dir) / name;
    std::error_code ec;
    if (fs::exists(src, ec)) {
      fs::copy_file(src, fs::path(dir) / name, fs::copy_options::overwrite_existing, ec);
      if (ec) return absl::UnavailableError(absl::StrCat("cannot copy ", src.string(), ": ", ec.message()));
    }
  }
  return absl::OkStatus();
}

}  // namespace ptq
