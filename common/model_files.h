// The weight files of a Hugging Face model folder: one model.safetensors, or shards listed in
// model.safetensors.index.json. Shards are opened (memory-mapped) on first use, so a worker that
// touches one block maps only the shards holding it.
//
// Thread-safety: Get may be called from several threads; shard opening is serialised.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/safetensors_reader.h"

namespace ptq {

class ModelFiles {
 public:
  static absl::StatusOr<std::unique_ptr<ModelFiles>> Open(const std::string& model_dir);

  bool Has(const std::string& name) const { return shard_of_.count(name) > 0; }
  absl::StatusOr<TensorView> Get(const std::string& name) const;
  std::vector<std::string> TensorNames() const;
  const std::string& dir() const { return dir_; }

 private:
  explicit ModelFiles(std::string dir) : dir_(std::move(dir)) {}
  std::string dir_;
  std::map<std::string, std::string> shard_of_;  // tensor name -> shard file name
  mutable std::mutex mu_;
  mutable std::map<std::string, std::unique_ptr<SafetensorsReader>> open_shards_;
};

}  // namespace ptq
