// Sums of float tensors whose result does not depend on the order of the terms, so that N workers
// each summing a shard of the calibration tokens and all-reducing give the same bits as one process
// summing everything (the distributed service's "same checkpoint with any worker count").
//
// Each term is rounded, element by element, to the fixed-point grid 2^-40 and kept as two int64
// limbs (value * 2^40 = high * 2^31 + low, 0 <= low <= 2^31). Rounding a term does not depend on the
// other terms and integer addition is associative, so any grouping of the same terms gives the same
// limbs; the limbs all-reduce as plain int64 sums. Range: |sum| < 2^53 per element, resolution
// 2^-40 (about 1e-12) per term: finer than float32 products carry for any activation scale down to 1e-3.
#pragma once

#include <ATen/core/Tensor.h>

namespace ptq {

class ExactSum {
 public:
  ExactSum() = default;
  // An all-zero sum of `shape` on `device`.
  ExactSum(at::IntArrayRef shape, at::Device device);
  // Adds a float32 or float64 tensor of the sum's shape. Non-finite entries make the value NaN.
  // On the CPU one fused pass over the term; elsewhere AddWithTensorOps.
  void Add(const at::Tensor& term);
  // The device-generic path: the same limbs from tensor ops (about ten passes and temporaries of
  // the term's size); exactsum_test checks that the CPU pass gives the same bits.
  void AddWithTensorOps(const at::Tensor& term);
  void Merge(const ExactSum& other);
  // The sum as float64 (NaN everywhere once a non-finite term was added).
  at::Tensor Value() const;
  // The int64 limbs, for collectives that add them across workers.
  at::Tensor& high() { return high_; }
  at::Tensor& low() { return low_; }
  const at::Tensor& high() const { return high_; }
  const at::Tensor& low() const { return low_; }
  // Non-finite entries seen (they are left out of the limbs): a 0-dim int64 tensor on the sum's
  // device (so adding never waits for the device), summed across workers like the limbs.
  at::Tensor& non_finite() { return non_finite_; }
  int64_t NonFiniteCount() const;

 private:
  at::Tensor high_, low_;
  at::Tensor non_finite_;
};

}  // namespace ptq
