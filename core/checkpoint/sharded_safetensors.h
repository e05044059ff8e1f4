// The part every packed checkpoint writer shares: tensors streamed into safetensors shards of at most
// `max_shard_bytes` under temporary names, then named `model.safetensors` (one shard) or
// `model-0000x-of-0000y.safetensors` with `model.safetensors.index.json` (several), as Hugging Face
// loaders expect; and the tokenizer files copied from the source model.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/safetensors_writer.h"

namespace ptq {

class ShardedSafetensors {
 public:
  ShardedSafetensors(std::string dir, uint64_t max_shard_bytes)
      : dir_(std::move(dir)), max_shard_bytes_(max_shard_bytes) {}
  absl::Status Add(const std::string& name, DType dtype, std::vector<int64_t> shape,
                   std::vector<uint8_t> bytes);
  // Flushes the last shard, renames every shard into place and writes the index when there are several.
  absl::Status Finish();

 private:
  absl::Status FlushShard();

  std::string dir_;
  uint64_t max_shard_bytes_;
  std::unique_ptr<SafetensorsWriter> shard_ = std::make_unique<SafetensorsWriter>();
  std::vector<std::string> shard_names_;    // in the current shard
  std::vector<std::string> shard_files_;    // written, temporary names
  std::map<std::string, size_t> shard_of_;  // tensor -> shard index
  uint64_t total_bytes_ = 0;
};

// Copies the tokenizer and generation files that exist in `source_dir` into `dir`.
absl::Status CopyTokenizerFiles(const std::string& source_dir, const std::string& dir);

}  // namespace ptq
