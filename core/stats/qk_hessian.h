// Which attention-score error BoA's H_out of q_proj/k_proj measures (`--qk-hessian`). No LibTorch:
// the job options name it.
#pragma once

#include <string_view>

namespace ptq {

// Which score error H_out of q_proj/k_proj measures (`--qk-hessian`).
enum class QkHessian {
  // BoA's: the mean squared score error over every (query, key) pair of the calibration set, so
  // H_out(q) is the keys' second moment and H_out(k) the queries'.
  kMoment,
  // As kMoment, but q's from the key covariance. Softmax ignores a shift of all of a query's
  // scores, and the error along the mean key is such a shift (as far as one mean over all positions
  // stands for every query's keys), so it needs no compensation.
  kCovariance,
  // The error softmax passes on to first order: query i's score errors e weighed by its Jacobian
  // diag(p_i) - p_i p_i^T, i.e. sum_j p_ij (e_j - sum_l p_il e_l)^2. For q that is the
  // attention-weighted key covariance of each query, exactly; for k the attention-weighted query
  // second moment (the cross term between keys is not a Kronecker factor and is left out). Keys a
  // query does not attend to no longer count.
  kSoftmax,
};
// "moment" | "covariance" | "softmax"; false for anything else.
inline bool ParseQkHessian(std::string_view name, QkHessian* out) {
  if (name == "moment") {
    *out = QkHessian::kMoment;
  } else if (name == "covariance") {
    *out = QkHessian::kCovariance;
  } else if (name == "softmax") {
    *out = QkHessian::kSoftmax;
  } else {
    return false;
  }
  return true;
}

}  // namespace ptq
