#include "kernels/hessian_accumulate.h"

#include <string>

namespace ptq::kernels {

absl::Status HessianAccumulateRef(const HessianAccumulateArgs& a) {
  if (const char* e = HessianAccumulateArgsError(a)) {
    return absl::InvalidArgumentError(std::string("HessianAccumulateRef: ") + e);
  }
  for (int64_t i = 0; i < a.dim; ++i) {
    for (int64_t j = i; j < a.dim; ++j) {
      double acc = 0.0;
      for (int64_t t0 = 0; t0 < a.tokens; t0 += kHessianChunkTokens) {
        const int64_t t1 = t0 + kHessianChunkTokens < a.tokens ? t0 + kHessianChunkTokens : a.tokens;
        float p = 0.0f;
        for (int64_t t = t0; t < t1; ++t) p += a.x[t * a.dim + i] * a.x[t * a.dim + j];
        acc += static_cast<double>(p);
      }
      a.sum[i * a.dim + j] += acc;
      if (j != i) a.sum[j * a.dim + i] += acc;
    }
  }
  return absl::OkStatus();
}

}  // namespace ptq::kernels
