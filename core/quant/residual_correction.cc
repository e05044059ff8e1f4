#include "core/quant/residual_correction.h"

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "core/quant/gptq_quantizer.h"

namespace ptq {

CrossTermAccumulator::CrossTermAccumulator(int64_t dim, at::Device device)
    : sum_({dim, dim}, device) {}

void CrossTermAccumulator::Add(const at::Tensor& x_fp, const at::Tensor& x_q) {
  const int64_t dim = sum_.high().size(0);
  at::Tensor q = x_q.reshape({-1, dim}).to(at::kFloat);
  at::Tensor f = x_fp.reshape({-1, dim}).to(at::kFloat);
  // Same recipe as HessianAccumulator: product in float32 on the device, summed exactly.
  sum_.Add(at::matmul((f - q).t(), q));
  count_ += q.size(0);
}

void CrossTermAccumulator::Merge(const CrossTermAccumulator& other) {
  sum_.Merge(other.sum_);
  count_ += other.count_;
}

at::Tensor CrossTermAccumulator::Cross() const {
  at::Tensor sum = sum_.Value();
  return count_ > 0 ? sum * (2.0 / static_cast<double>(count_)) : sum;
}

absl::StatusOr<at::Tensor> ResidualMatrix(const at::Tensor& hessian, const at::Tensor& cross,
                                          double alpha, double damp, const std::string& what) {
  const int64_t in = hessian.size(0);
  if (cross.size(0) != in || cross.size(1) != in) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": residual correction needs ", in, " x ", in, " statistics"));
  }
  at::Tensor h = hessian.to(at::kDouble).clone();
  at::Tensor diag = h.diagonal();
  diag.masked_fill_(diag == 0, 1.0);  // dead inputs, as GPTQ treats them (their D column is 0)
  // (H + damp)^-1 = U^T U with U upper: D H^-1 = (D U^T) U.
  PTQ_ASSIGN_OR_RETURN(at::Tensor u, InverseCholeskyUpper(h, damp, what));
  return ResidualMatrixFromFactor(cross, u.to(h.options()), alpha);
}

at::Tensor ResidualMatrixFromFactor(const at::Tensor& cross, const at::Tensor& u_f64, double alpha) {
  return alpha * at::matmul(at::matmul(cross.to(u_f64.options()), u_f64.t()), u_f64);
}

absl::StatusOr<at::Tensor> ResidualTarget(const at::Tensor& weight, const at::Tensor& hessian,
                                          const at::Tensor& cross, double alpha, double damp,
                                          const std::string& what) {
  if (alpha == 0) return weight;
  if (hessian.size(0) != weight.size(1)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": residual correction needs ", weight.size(1), " x ", weight.size(1),
                     " statistics"));
  }
  PTQ_ASSIGN_OR_RETURN(at::Tensor r, ResidualMatrix(hessian, cross, alpha, damp, what));
  at::Tensor w = weight.to(at::kDouble);
  return (w + at::matmul(w, r.to(w.options()))).to(weight.scalar_type());
}

}  // namespace ptq
