#include "common/model_files.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/model_config.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace ptq {

absl::StatusOr<std::unique_ptr<ModelFiles>> ModelFiles::Open(const std::string& model_dir) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(model_dir)) {
    return absl::NotFoundError(absl::StrCat("model folder ", model_dir, " does not exist"));
  }
  std::unique_ptr<ModelFiles> files(new ModelFiles(model_dir));
  std::string index_path = model_dir + "/model.safetensors.index.json";
  std::string single_path = model_dir + "/model.safetensors";
  if (fs::exists(index_path)) {
    PTQ_ASSIGN_OR_RETURN(std::string text, ReadFileToString(index_path));
    nlohmann::json index;
    try {
      index = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
      return absl::DataLossError(absl::StrCat(index_path, " is not valid JSON: ", e.what()));
    }
    if (!index.contains("weight_map") || !index["weight_map"].is_object()) {
      return absl::DataLossError(absl::StrCat(index_path, " has no weight_map object"));
    }
    for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
      if (!it.value().is_string()) {
        return absl::DataLossError(absl::StrCat(index_path, ": weight_map entry ", it.key(),
                                                " is not a file name"));
      }
      std::string shard = it.value().get<std::string>();
      if (shard.find('/') != std::string::npos) {
        return absl::DataLossError(
            absl::StrCat(index_path, ": shard name \"", shard, "\" must be a plain file name"));
      }
      files->shard_of_[it.key()] = shard;
    }
  } else if (fs::exists(single_path)) {
    PTQ_ASSIGN_OR_RETURN(auto reader, SafetensorsReader::Open(single_path));
    for (const auto& name : reader->TensorNames()) files->shard_of_[name] = "model.safetensors";
    files->open_shards_["model.safetensors"] = std::move(reader);
  } else {
    return absl::NotFoundError(absl::StrCat("model folder ", model_dir,
                                            " has neither model.safetensors nor "
                                            "model.safetensors.index.json"));
  }
  return files;
}

absl::StatusOr<TensorView> ModelFiles::Get(const std::string& name) const {
  auto it = shard_of_.find(name);
  if (it == shard_of_.end()) {
    return absl::NotFoundError(absl::StrCat("model ", dir_, " has no tensor \"", name, "\""));
  }
  const SafetensorsReader* reader = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto& slot = open_shards_[it->second];
    if (!slot) {
      PTQ_ASSIGN_OR_RETURN(slot, SafetensorsReader::Open(dir_ + "/" + it->second));
    }
    reader = slot.get();
  }
  return reader->Get(name);
}

std::vector<std::string> ModelFiles::TensorNames() const {
  std::vector<std::string> names;
  for (const auto& [name, shard] : shard_of_) names.push_back(name);
  return names;
}

}  // namespace ptq
