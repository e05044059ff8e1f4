// libFuzzer target: the safetensors header validation on arbitrary bytes. The first 8 bytes give the
// size of the data section the header must fit; the rest is the header JSON. Must never crash, and
// every accepted header must describe tensors inside the data section.
#include <cstdint>
#include <cstring>
#include <string_view>

#include "common/dtype.h"
#include "common/safetensors_reader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 8) return 0;
  uint64_t data_bytes;
  std::memcpy(&data_bytes, data, 8);
  data_bytes %= (1ull << 32);
  std::string_view json(reinterpret_cast<const char*>(data) + 8, size - 8);
  auto parsed = ptq::ParseSafetensorsHeader(json, data_bytes);
  if (parsed.ok()) {
    for (const auto& [name, e] : parsed->tensors) {
      if (e.end > data_bytes || e.begin > e.end) __builtin_trap();
      uint64_t n = 1;
      for (int64_t d : e.shape) n *= static_cast<uint64_t>(d);
      if (n * ptq::DTypeSize(e.dtype) != e.end - e.begin) __builtin_trap();
    }
  }
  return 0;
}
