#include "core/quant/quantized_linear.h"

#include <ATen/ATen.h>

namespace ptq {

double LayerLoss(const at::Tensor& weight, const at::Tensor& quantized, const at::Tensor& hessian) {
  at::Tensor d = (weight.to(at::kDouble) - quantized.to(at::kDouble));
  return (at::matmul(d, hessian.to(at::kDouble)) * d).sum().item<double>();
}

QuantizedLinear ConcatRows(const std::vector<QuantizedLinear>& parts) {
  QuantizedLinear out = parts.front();
  std::vector<at::Tensor> weights, codes, scales, zeros;
  for (const auto& p : parts) {
    weights.push_back(p.weight);
    codes.push_back(p.codes);
    scales.push_back(p.scales);
    zeros.push_back(p.zeros);
  }
  out.weight = at::cat(weights, 0);
  out.codes = at::cat(codes, 0);
  out.scales = at::cat(scales, 0);
  out.zeros = at::cat(zeros, 0);
  return out;
}

at::Tensor DequantizeLinear(const QuantizedLinear& q) {
  at::Tensor g = q.g_idx.to(at::kLong);
  at::Tensor s = q.scales.index_select(1, g);  // [out, in]
  at::Tensor z = q.zeros.index_select(1, g);
  return s * (q.codes.to(at::kFloat) - z);
}

}  // namespace ptq
