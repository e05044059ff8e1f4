#include "core/model/calibration.h"

#include <ATen/ATen.h>

#include <random>

#include "absl/strings/str_cat.h"

namespace ptq {

absl::StatusOr<at::Tensor> SampleCalibrationWindows(const std::vector<int32_t>& tokens,
                                                    int64_t num_windows, int64_t seq_len,
                                                    uint64_t seed) {
  if (num_windows <= 0 || seq_len <= 0) {
    return absl::InvalidArgumentError("calibration needs at least one window of at least one token");
  }
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (n < seq_len) {
    return absl::InvalidArgumentError(absl::StrCat("calibration text has ", n,
                                                   " tokens, shorter than one window of ", seq_len));
  }
  // mt19937_64's output sequence is fixed by the standard; the modulo keeps the choice portable
  // (std::uniform_int_distribution is not).
  std::mt19937_64 rng(seed);
  at::Tensor ids = at::empty({num_windows, seq_len}, at::kLong);
  int64_t* p = ids.data_ptr<int64_t>();
  const uint64_t starts = static_cast<uint64_t>(n - seq_len + 1);
  for (int64_t w = 0; w < num_windows; ++w) {
    const int64_t start = static_cast<int64_t>(rng() % starts);
    for (int64_t t = 0; t < seq_len; ++t) p[w * seq_len + t] = tokens[start + t];
  }
  return ids;
}

}  // namespace ptq
