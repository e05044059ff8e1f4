#include "core/quant/fp16_scale.h"

#include <ATen/ATen.h>

namespace ptq {

at::Tensor RoundScalesToFp16(const at::Tensor& scales) {
  return scales.to(at::kHalf).to(scales.scalar_type()).clamp_min(kMinFp16Scale);
}

}  // namespace ptq
