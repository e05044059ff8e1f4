#include "common/safetensors_reader.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace ptq {

int64_t TensorView::NumElements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<ParsedHeader> ParseSafetensorsHeader(std::string_view header_json,
                                                    uint64_t data_bytes) {
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(header_json);
  } catch (const nlohmann::json::exception& e) {
    return absl::DataLossError(absl::StrCat("safetensors header is not valid JSON: ", e.what()));
  }
  if (!header.is_object()) return absl::DataLossError("safetensors header is not a JSON object");
  ParsedHeader parsed;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& value = it.value();
    if (name == "__metadata__") {
      if (!value.is_object()) return absl::DataLossError("safetensors __metadata__ is not an object");
      for (auto m = value.begin(); m != value.end(); ++m) {
        if (!m.value().is_string()) {
          return absl::DataLossError(
              absl::StrCat("safetensors __metadata__ value \"", m.key(), "\" is not a string"));
        }
        parsed.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    auto bad = [&](const std::string& why) {
      return absl::DataLossError(absl::StrCat("safetensors tensor \"", name, "\": ", why));
    };
    if (!value.is_object()) return bad("entry is not an object");
    if (!value.contains("dtype") || !value["dtype"].is_string()) return bad("missing dtype");
    if (!value.contains("shape") || !value["shape"].is_array()) return bad("missing shape");
    if (!value.contains("data_offsets") || !value["data_offsets"].is_array() ||
        value["data_offsets"].size() != 2) {
      return bad("data_offsets must be [begin, end]");
    }
    ParsedHeader::Entry entry;
    auto dtype = ParseDType(value["dtype"].get<std::string>());
    if (!dtype.ok()) return bad(std::string(dtype.status().message()));
    entry.dtype = *dtype;
    uint64_t elements = 1;
    for (const auto& d : value["shape"]) {
      if (!d.is_number_unsigned()) return bad("shape entries must be non-negative integers");
      uint64_t dim = d.get<uint64_t>();
      if (dim > (1ull << 40) || (dim != 0 && elements > (1ull << 50) / dim)) {
        return bad("shape is implausibly large");
      }
      elements *= dim;
      entry.shape.push_back(static_cast<int64_t>(dim));
    }
    for (const auto& o : value["data_offsets"]) {
      if (!o.is_number_unsigned()) return bad("data_offsets must be non-negative integers");
    }
    entry.begin = value["data_offsets"][0].get<uint64_t>();
    entry.end = value["data_offsets"][1].get<uint64_t>();
    if (entry.end < entry.begin) return bad("data_offsets end before begin");
    if (entry.end > data_bytes) {
      return bad(absl::StrCat("data_offsets end ", entry.end, " past the data section of ",
                              data_bytes, " bytes (truncated file?)"));
    }
    if (entry.end - entry.begin != elements * DTypeSize(entry.dtype)) {
      return bad(absl::StrCat("holds ", entry.end - entry.begin, " bytes but dtype x shape needs ",
                              elements * DTypeSize(entry.dtype)));
    }
    ranges.emplace_back(entry.begin, entry.end);
    parsed.tensors.emplace(name, std::move(entry));
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].first < ranges[i - 1].second) {
      return absl::DataLossError("safetensors tensors overlap in the data section");
    }
  }
  return parsed;
}

absl::StatusOr<std::unique_ptr<SafetensorsReader>> SafetensorsReader::Open(const std::string& path) {
  PTQ_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> file, MappedFile::Open(path));
  if (file->size() < 8) {
    return absl::DataLossError(absl::StrCat(path, ": too short to be a safetensors file"));
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | file->data()[i];
  if (header_len > kMaxSafetensorsHeaderBytes) {
    return absl::DataLossError(absl::StrCat(path, ": safetensors header length ", header_len,
                                            " is implausible (corrupt file?)"));
  }
  if (8 + header_len > file->size()) {
    return absl::DataLossError(absl::StrCat(path, ": safetensors header length ", header_len,
                                            " runs past the end of the file (", file->size(),
                                            " bytes)"));
  }
  std::string_view json(reinterpret_cast<const char*>(file->data()) + 8, header_len);
  auto parsed = ParseSafetensorsHeader(json, file->size() - 8 - header_len);
  if (!parsed.ok()) {
    return absl::Status(parsed.status().code(), absl::StrCat(path, ": ", parsed.status().message()));
  }
  return std::unique_ptr<SafetensorsReader>(
      new SafetensorsReader(std::move(file), std::move(parsed).value(), 8 + header_len));
}

std::vector<std::string> SafetensorsReader::TensorNames() const {
  std::vector<std::string> names;
  for (const auto& [name, entry] : header_.tensors) names.push_back(name);
  return names;
}

absl::StatusOr<TensorView> SafetensorsReader::Get(const std::string& name) const {
  auto it = header_.tensors.find(name);
  if (it == header_.tensors.end()) {
    return absl::NotFoundError(absl::StrCat(path(), ": no tensor named \"", name, "\""));
  }
  TensorView view;
  view.name = name;
  view.dtype = it->second.dtype;
  view.shape = it->second.shape;
  view.data = file_->data() + data_start_ + it->second.begin;
  view.num_bytes = it->second.end - it->second.begin;
  return view;
}

}  // namespace ptq
