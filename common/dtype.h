// Element types of safetensors files and the conversions the project needs between them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace ptq {

enum class DType { kF32, kF16, kBF16, kF64, kI32, kI64, kI16, kI8, kU8, kBool };

// "F32", "BF16", ... as the safetensors header spells them.
std::string_view DTypeName(DType dtype);
absl::StatusOr<DType> ParseDType(std::string_view name);
size_t DTypeSize(DType dtype);

// IEEE half and bfloat16 to float32 and back (round to nearest even).
float HalfToFloat(uint16_t h);
uint16_t FloatToHalf(float f);
float BFloat16ToFloat(uint16_t b);
uint16_t FloatToBFloat16(float f);

}  // namespace ptq
