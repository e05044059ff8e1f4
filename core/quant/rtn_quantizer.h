// Round-to-nearest: each row (or group of `group_size` columns) on its own grid, no compensation.
// Tensor ops on the weight's device; the result stays there.
#pragma once

#include <ATen/core/Tensor.h>

#include "core/quant/quantized_linear.h"

namespace ptq {

// weight: [out, in]; group_size <= 0 or >= in means one grid per row.
// A last group shorter than group_size is allowed (see GptqQuantize).
QuantizedLinear RtnQuantize(const at::Tensor& weight, const GridOptions& grid, int64_t group_size);

}  // namespace ptq
