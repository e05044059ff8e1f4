// Raw little-endian bytes of a host tensor or vector, as the safetensors writers take them.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <cstring>
#include <vector>

namespace ptq {

template <typename T>
std::vector<uint8_t> VectorBytes(const std::vector<T>& v) {
  std::vector<uint8_t> b(v.size() * sizeof(T));
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

// REQUIRES: t is on the CPU.
inline std::vector<uint8_t> TensorBytes(const at::Tensor& t) {
  at::Tensor c = t.contiguous();
  std::vector<uint8_t> b(c.numel() * c.element_size());
  std::memcpy(b.data(), c.data_ptr(), b.size());
  return b;
}

}  // namespace ptq
