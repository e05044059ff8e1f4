// Writer of one .safetensors file. Tensors are added as raw little-endian bytes and written in the
// order added; Finish writes to `path + ".tmp"`, fsyncs and renames, so a crash never leaves a
// half-written file under the final name.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/dtype.h"

namespace ptq {

class SafetensorsWriter {
 public:
  // REQUIRES: bytes.size() == product(shape) * DTypeSize(dtype); names unique.
  absl::Status AddTensor(const std::string& name, DType dtype, std::vector<int64_t> shape,
                         std::vector<uint8_t> bytes);
  void SetMetadata(const std::string& key, const std::string& value) { metadata_[key] = value; }
  size_t num_bytes() const { return total_bytes_; }
  absl::Status Finish(const std::string& path);

 private:
  struct Pending {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;
  };
  std::vector<Pending> tensors_;
  std::map<std::string, std::string> metadata_;
  size_t total_bytes_ = 0;
};

// Writes `contents` to `path` atomically (temporary file, fsync, rename).
absl::Status WriteFileAtomically(const std::string& path, std::string_view contents);

}  // namespace ptq
