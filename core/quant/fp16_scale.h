// Group scales are float16 in GPTQ checkpoints, so quantization uses exactly the values a checkpoint
// stores: rounded to the nearest float16 (ties to even), and never 0 — a collapsed range gets 2^-24,
// float16's smallest subnormal. The one rounding every quantizer uses (the CUDA kernels share the
// scalar one through kernels/grid_fit.h).
#pragma once

#include <ATen/core/Tensor.h>

#include "kernels/grid_fit.h"

namespace ptq {

using kernels::kMinFp16Scale;

inline float RoundScaleToFp16(float scale) { return kernels::RoundScaleToFp16(scale); }

// Elementwise, on the scales' device, in their dtype (float64 scales round through float32, as
// ATen's conversion to float16 does).
at::Tensor RoundScalesToFp16(const at::Tensor& scales);

}  // namespace ptq
