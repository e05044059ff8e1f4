// Reader of one .safetensors file: 8-byte little-endian header length, a JSON header mapping tensor
// names to {dtype, shape, data_offsets}, then the raw data (docs/formats.md). The file is memory-mapped
// and every tensor is a view into the map; the header is validated strictly before anything is exposed.
//
// Thread-safety: immutable after Open; views may be read from any thread while the reader lives.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/dtype.h"
#include "common/mapped_file.h"

namespace ptq {

struct TensorView {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // into the map; little-endian elements
  size_t num_bytes = 0;

  int64_t NumElements() const;
};

// Largest header accepted: real checkpoints stay below a few MB even with thousands of tensors.
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100ull << 20;

// Parses and validates a header against a data section of `data_bytes` bytes. Exposed apart from the
// file so the validation can be tested and fuzzed on byte strings.
struct ParsedHeader {
  struct Entry {
    DType dtype;
    std::vector<int64_t> shape;
    uint64_t begin = 0;  // relative to the start of the data section
    uint64_t end = 0;
  };
  std::map<std::string, Entry> tensors;
  std::map<std::string, std::string> metadata;
};
absl::StatusOr<ParsedHeader> ParseSafetensorsHeader(std::string_view header_json, uint64_t data_bytes);

class SafetensorsReader {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsReader>> Open(const std::string& path);

  const std::string& path() const { return file_->path(); }
  std::vector<std::string> TensorNames() const;
  bool Has(const std::string& name) const { return header_.tensors.count(name) > 0; }
  absl::StatusOr<TensorView> Get(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }

 private:
  SafetensorsReader(std::unique_ptr<MappedFile> file, ParsedHeader header, uint64_t data_start)
      : file_(std::move(file)), header_(std::move(header)), data_start_(data_start) {}
  std::unique_ptr<MappedFile> file_;
  ParsedHeader header_;
  uint64_t data_start_;
};

}  // namespace ptq
