#include "common/safetensors_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace ptq {
namespace {

class FdWriter {
 public:
  explicit FdWriter(int fd) : fd_(fd) {}
  ~FdWriter() {
    if (fd_ >= 0) ::close(fd_);
  }
  FdWriter(const FdWriter&) = delete;
  FdWriter& operator=(const FdWriter&) = delete;
  bool Write(const void* data, size_t n) {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      ssize_t w = ::write(fd_, p, n);
      if (w < 0) {
        if (errno == EINTR) continue;
        return false;
      }
      p += w;
      n -= static_cast<size_t>(w);
    }
    return true;
  }
  bool SyncAndClose() {
    bool ok = ::fsync(fd_) == 0;
    ok = (::close(fd_) == 0) && ok;
    fd_ = -1;
    return ok;
  }

 private:
  int fd_;
};

absl::Status WriteChunksAtomically(const std::string& path,
                                   const std::vector<std::string_view>& chunks) {
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::UnavailableError(absl::StrCat("cannot create ", tmp, ": ", std::strerror(errno)));
  }
  FdWriter writer(fd);
  for (std::string_view chunk : chunks) {
    if (!writer.Write(chunk.data(), chunk.size())) {
      int err = errno;
      ::unlink(tmp.c_str());
      return absl::ResourceExhaustedError(
          absl::StrCat("cannot write ", tmp, ": ", std::strerror(err)));
    }
  }
  if (!writer.SyncAndClose()) {
    int err = errno;
    ::unlink(tmp.c_str());
    return absl::UnavailableError(absl::StrCat("cannot sync ", tmp, ": ", std::strerror(err)));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return absl::UnavailableError(
        absl::StrCat("cannot rename ", tmp, " to ", path, ": ", std::strerror(err)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status SafetensorsWriter::AddTensor(const std::string& name, DType dtype,
                                          std::vector<int64_t> shape, std::vector<uint8_t> bytes) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  if (bytes.size() != static_cast<size_t>(n) * DTypeSize(dtype)) {
    return absl::InvalidArgumentError(absl::StrCat("tensor \"", name, "\": ", bytes.size(),
                                                   " bytes do not match its dtype and shape"));
  }
  for (const auto& t : tensors_) {
    if (t.name == name) {
      return absl::InvalidArgumentError(absl::StrCat("tensor \"", name, "\" added twice"));
    }
  }
  total_bytes_ += bytes.size();
  tensors_.push_back({name, dtype, std::move(shape), std::move(bytes)});
  return absl::OkStatus();
}

absl::Status SafetensorsWriter::Finish(const std::string& path) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata_.empty()) header["__metadata__"] = metadata_;
  uint64_t offset = 0;
  for (const auto& t : tensors_) {
    header[t.name] = {{"dtype", std::string(DTypeName(t.dtype))},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  std::string json = header.dump();
  // Pad with spaces so the data section starts 8-byte aligned, as the reference writer does.
  while ((8 + json.size()) % 8 != 0) json.push_back(' ');
  uint8_t len_bytes[8];
  uint64_t len = json.size();
  for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<uint8_t>(len >> (8 * i));
  std::vector<std::string_view> chunks;
  chunks.emplace_back(reinterpret_cast<const char*>(len_bytes), 8);
  chunks.emplace_back(json);
  for (const auto& t : tensors_) {
    chunks.emplace_back(reinterpret_cast<const char*>(t.bytes.data()), t.bytes.size());
  }
  return WriteChunksAtomically(path, chunks);
}

absl::Status WriteFileAtomically(const std::string& path, std::string_view contents) {
  return WriteChunksAtomically(path, {contents});
}

}  // namespace ptq
