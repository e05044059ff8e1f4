// A 64-bit hash whose value is defined (XXH3-64), for what is persisted or compared between processes
// and builds: the resume key of a job's finished blocks and the model fingerprint. std::hash is
// implementation-defined and may change with the standard library.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

namespace ptq {

uint64_t StableHash64(std::string_view bytes);

// The hash of several pieces fed in order: the same value as StableHash64 of their concatenation.
class StableHasher {
 public:
  StableHasher();
  ~StableHasher();
  StableHasher(const StableHasher&) = delete;
  StableHasher& operator=(const StableHasher&) = delete;
  void Add(const void* data, size_t n);
  void Add(std::string_view bytes) { Add(bytes.data(), bytes.size()); }
  uint64_t value() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace ptq
