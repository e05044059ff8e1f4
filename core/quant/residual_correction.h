// Correction for the error earlier quantized layers pass on (TurboBoA feature 2, GPTAQ;
// docs/algorithms.md "Error from preceding layers"). A layer sees X_q, the inputs of the partly
// quantized model, while the full-precision model feeds it X_f. The target becomes
//   ||W X_f - Q X_q||^2 = ||(W' - Q) X_q||^2 + const,   W' = W + W D H^-1,
// with H = (2/n) X_q X_q^T and the cross term D = (2/n) (X_f - X_q) X_q^T. So quantizing W' with the
// usual H (GPTQ, BoA, the scale refinement) minimises the new target; alpha scales D (alpha = 1 is
// the exact target, GPTAQ uses 0.25).
#pragma once

#include <cstdint>
#include <string>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "core/stats/exact_sum.h"

namespace ptq {

// Accumulates sum (x_f - x_q) x_q^T and the token count. An ExactSum plus a count, so data-parallel
// workers combine shards with one all-reduce and get the one-process bits.
class CrossTermAccumulator {
 public:
  // The sum lives on `device` (terms are moved there); CPU by default, as HessianAccumulator's.
  explicit CrossTermAccumulator(int64_t dim, at::Device device = at::kCPU);
  // x_fp, x_q: [..., dim], the same tokens through the full-precision and the partly quantized model.
  void Add(const at::Tensor& x_fp, const at::Tensor& x_q);
  void Merge(const CrossTermAccumulator& other);
  ExactSum& sum() { return sum_; }
  int64_t& count() { return count_; }
  int64_t count() const { return count_; }
  // D = (2 / n) sum (x_f - x_q) x_q^T, [dim, dim] float64 (the same scale as HessianAccumulator).
  at::Tensor Cross() const;

 private:
  ExactSum sum_;
  int64_t count_ = 0;
};

// R = alpha D (H + damp)^-1, [in, in] float64 on H's device, so that W' = W + W R (computed once per
// slot, applied to row units). The damping's checks read back to the host (InverseCholeskyUpper). H is damped as GPTQ damps it (dead inputs get H_ii = 1; a Cholesky failure raises
// the damping step by step).
absl::StatusOr<at::Tensor> ResidualMatrix(const at::Tensor& hessian, const at::Tensor& cross,
                                          double alpha, double damp, const std::string& what);
// The same from the float64 upper factor U of that (H + damp)^-1 = U^T U, for a caller that has it
// (GptqFactor::u_f64 of the slot's Hessian): alpha (D U^T) U.
at::Tensor ResidualMatrixFromFactor(const at::Tensor& cross, const at::Tensor& u_f64, double alpha);

// W' = W + alpha W D (H + damp)^-1, float32 [out, in]. H is damped as GPTQ damps it (dead inputs get
// H_ii = 1; a Cholesky failure raises the damping step by step). alpha = 0 returns `weight` itself.
absl::StatusOr<at::Tensor> ResidualTarget(const at::Tensor& weight, const at::Tensor& hessian,
                                          const at::Tensor& cross, double alpha, double damp,
                                          const std::string& what);

}  // namespace ptq
