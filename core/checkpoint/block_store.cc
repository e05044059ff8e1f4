#include "core/checkpoint/block_store.h"

#include <ATen/ATen.h>

#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/safetensors_reader.h"
#include "common/safetensors_writer.h"
#include "nlohmann/json.hpp"

namespace ptq {
namespace {

namespace fs = std::filesystem;

absl::Status AddTensor(SafetensorsWriter& writer, const std::string& name, const at::Tensor& t,
                       DType dtype) {
  at::Tensor c = t.contiguous();
  std::vector<uint8_t> bytes(c.nbytes());
  if (!bytes.empty()) std::memcpy(bytes.data(), c.data_ptr(), bytes.size());
  return writer.AddTensor(name, dtype, c.sizes().vec(), std::move(bytes));
}

absl::StatusOr<at::Tensor> ReadTensor(const SafetensorsReader& reader, const std::string& name,
                                      at::ScalarType type) {
  auto view = reader.Get(name);
  if (!view.ok()) return view.status();
  at::Tensor t = at::empty(view->shape, at::TensorOptions().dtype(type));
  if (static_cast<size_t>(t.nbytes()) != view->num_bytes) {
    return absl::DataLossError(absl::StrCat(reader.path(), ": ", name, " has the wrong size"));
  }
  if (view->num_bytes > 0) std::memcpy(t.data_ptr(), view->data, view->num_bytes);
  return t;
}

}  // namespace

absl::StatusOr<BlockStore> BlockStore::Open(const std::string& dir, const std::string& key) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  BlockStore store(dir, key);
  // Another job's blocks (different options or inputs) are of no use: clear them.
  auto first = SafetensorsReader::Open(store.PathOf(0));
  if (first.ok()) {
    auto it = (*first)->metadata().find("job_key");
    if (it == (*first)->metadata().end() || it->second != key) {
      for (const auto& entry : fs::directory_iterator(dir, ec)) fs::remove_all(entry.path(), ec);
    }
  }
  return store;
}

std::string BlockStore::PathOf(int64_t block) const {
  return absl::StrFormat("%s/block-%05d.safetensors", dir_, block);
}

int64_t BlockStore::BlocksDone() const {
  int64_t n = 0;
  while (true) {
    auto reader = SafetensorsReader::Open(PathOf(n));
    if (!reader.ok()) return n;
    auto it = (*reader)->metadata().find("job_key");
    if (it == (*reader)->metadata().end() || it->second != key_) return n;
    ++n;
  }
}

absl::Status BlockStore::Save(int64_t block, const std::vector<StoredLayer>& layers) const {
  SafetensorsWriter writer;
  nlohmann::json index = nlohmann::json::array();
  for (size_t i = 0; i < layers.size(); ++i) {
    const StoredLayer& l = layers[i];
    const std::string p = absl::StrCat(i, ".");
    if (auto s = AddTensor(writer, p + "weight", l.q.weight.to(at::kFloat), DType::kF32); !s.ok()) return s;
    if (auto s = AddTensor(writer, p + "codes", l.q.codes.to(at::kByte), DType::kU8); !s.ok()) return s;
    if (auto s = AddTensor(writer, p + "scales", l.q.scales.to(at::kFloat), DType::kF32); !s.ok()) return s;
    if (auto s = AddTensor(writer, p + "zeros", l.q.zeros.to(at::kFloat), DType::kF32); !s.ok()) return s;
    if (auto s = AddTensor(writer, p + "g_idx", l.q.g_idx.to(at::kInt), DType::kI32); !s.ok()) return s;
    index.push_back({{"name", l.name},
                     {"group_size", l.q.group_size},
                     {"bits", l.q.bits},
                     {"sym", l.q.sym},
                     {"loss", l.q.loss},
                     {"report", {l.report_loss, l.report_relative_loss, l.report_rtn_loss,
                                 l.report_rtn_relative_loss, l.report_seconds}}});
  }
  writer.SetMetadata("job_key", key_);
  writer.SetMetadata("layers", index.dump());
  return writer.Finish(PathOf(block));
}

absl::StatusOr<std::vector<StoredLayer>> BlockStore::Load(int64_t block) const {
  auto reader = SafetensorsReader::Open(PathOf(block));
  if (!reader.ok()) return reader.status();
  auto it = (*reader)->metadata().find("layers");
  if (it == (*reader)->metadata().end()) {
    return absl::DataLossError(absl::StrCat(PathOf(block), ": no layer index"));
  }
  nlohmann::json index = nlohmann::json::parse(it->second, nullptr, /*allow_exceptions=*/false);
  if (!index.is_array()) return absl::DataLossError(absl::StrCat(PathOf(block), ": bad layer index"));
  std::vector<StoredLayer> layers;
  for (size_t i = 0; i < index.size(); ++i) {
    const nlohmann::json& e = index[i];
    const std::string p = absl::StrCat(i, ".");
    StoredLayer l;
    try {
      l.name = e.at("name").get<std::string>();
      l.q.group_size = e.at("group_size").get<int64_t>();
      l.q.bits = e.at("bits").get<int>();
      l.q.sym = e.at("sym").get<bool>();
      l.q.loss = e.at("loss").get<double>();
      const auto& r = e.at("report");
      l.report_loss = r.at(0).get<double>();
      l.report_relative_loss = r.at(1).get<double>();
      l.report_rtn_loss = r.at(2).get<double>();
      l.report_rtn_relative_loss = r.at(3).get<double>();
      l.report_seconds = r.at(4).get<double>();
    } catch (const nlohmann::json::exception& ex) {
      return absl::DataLossError(absl::StrCat(PathOf(block), ": ", ex.what()));
    }
    auto weight = ReadTensor(**reader, p + "weight", at::kFloat);
    auto codes = ReadTensor(**reader, p + "codes", at::kByte);
    auto scales = ReadTensor(**reader, p + "scales", at::kFloat);
    auto zeros = ReadTensor(**reader, p + "zeros", at::kFloat);
    auto g_idx = ReadTensor(**reader, p + "g_idx", at::kInt);
    for (const auto* t : {&weight, &codes, &scales, &zeros, &g_idx}) {
      if (!t->ok()) return t->status();
    }
    l.q.weight = *weight;
    l.q.codes = *codes;
    l.q.scales = *scales;
    l.q.zeros = *zeros;
    l.q.g_idx = *g_idx;
    layers.push_back(std::move(l));
  }
  return layers;
}

}  // namespace ptq
