#include "worker/quantized_linear.h"

#include <ATen/ATen.h>

namespace ptq::worker {

double LayerLoss(const at::Tensor& weight, const at::Tensor& quantized, const at::Tensor& hessian) {
  at::Tensor d = (weight.to(at::kDouble) - quantized.to(at::kDouble));
  return (at::matmul(d, hessian.to(at::kDouble)) * d).sum().item<double>();
}

at::Tensor DequantizeLinear(const QuantizedLinear& q) {
  at::Tensor g = q.g_idx.to(at::kLong);
  at::Tensor s = q.scales.index_select(1, g);  // [out, in]
  at::Tensor z = q.zeros.index_select(1, g);
  return s * (q.codes.to(at::kFloat) - z);
}

}  // namespace ptq::worker
