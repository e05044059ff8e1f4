#include "common/model_fingerprint.h"

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/stable_hash.h"

namespace ptq {
namespace {

// Larger headers are refused by the safetensors reader too (common/safetensors_reader.h).
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

// Length-prefixed parts: ("ab","c") != ("a","bc").
void AddPart(StableHasher& hash, const std::string& s) {
  hash.Add(s);
  const uint64_t n = s.size();
  hash.Add(&n, sizeof n);
}

absl::StatusOr<std::string> ReadAll(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path.string(), ": cannot read"));
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

absl::StatusOr<std::string> ModelFingerprint(const std::string& model_dir) {
  namespace fs = std::filesystem;
  StableHasher hash;
  auto config = ReadAll(fs::path(model_dir) / "config.json");
  if (!config.ok()) return config.status();
  AddPart(hash, *config);
  std::vector<fs::path> files;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(model_dir, ec)) {
    if (entry.path().extension() == ".safetensors") files.push_back(entry.path());
  }
  if (ec) return absl::NotFoundError(absl::StrCat(model_dir, ": ", ec.message()));
  std::sort(files.begin(), files.end());
  for (const fs::path& file : files) {
    std::ifstream in(file, std::ios::binary);
    uint64_t header_bytes = 0;
    if (!in.read(reinterpret_cast<char*>(&header_bytes), sizeof header_bytes) ||
        header_bytes > kMaxHeaderBytes) {
      return absl::DataLossError(absl::StrCat(file.string(), ": no readable safetensors header"));
    }
    std::string header(header_bytes, '\0');
    if (!in.read(header.data(), static_cast<std::streamsize>(header_bytes))) {
      return absl::DataLossError(absl::StrCat(file.string(), ": truncated safetensors header"));
    }
    AddPart(hash, file.filename().string());
    const uint64_t size = fs::file_size(file, ec);
    hash.Add(&size, sizeof size);
    AddPart(hash, header);
  }
  return absl::StrFormat("%016x", hash.value());
}

}  // namespace ptq
