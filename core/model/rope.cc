#include "core/model/rope.h"

#include <ATen/ATen.h>

#include <cmath>

namespace ptq {

RopeTable BuildRopeTable(const ModelConfig& c, int64_t max_positions) {
  const int64_t dim = c.head_dim;
  at::Tensor exponents = at::arange(0, dim, 2, at::kLong).to(at::kFloat) / static_cast<double>(dim);
  at::Tensor inv_freq = 1.0 / at::pow(c.rope_theta, exponents);
  const RopeScaling& rs = c.rope_scaling;
  if (rs.type == "linear") {
    inv_freq = inv_freq / rs.factor;
  } else if (rs.type == "llama3") {
    // Meta's Llama 3.1 frequency-dependent scaling, as in transformers' _compute_llama3_parameters.
    const double old_len = static_cast<double>(rs.original_max_position_embeddings);
    const double low_wavelen = old_len / rs.low_freq_factor;
    const double high_wavelen = old_len / rs.high_freq_factor;
    at::Tensor wavelen = 2 * M_PI / inv_freq;
    at::Tensor scaled = at::where(wavelen > low_wavelen, inv_freq / rs.factor, inv_freq);
    at::Tensor smooth = (old_len / wavelen - rs.low_freq_factor) /
                        (rs.high_freq_factor - rs.low_freq_factor);
    at::Tensor smoothed = (1 - smooth) * scaled / rs.factor + smooth * scaled;
    at::Tensor medium = at::logical_not(wavelen < high_wavelen).logical_and(
        at::logical_not(wavelen > low_wavelen));
    inv_freq = at::where(medium, smoothed, scaled);
  }
  at::Tensor positions = at::arange(max_positions, at::kLong).to(at::kFloat);
  at::Tensor freqs = at::outer(positions, inv_freq);  // [T, dim/2]
  at::Tensor emb = at::cat({freqs, freqs}, -1);
  return {emb.cos(), emb.sin()};
}

at::Tensor ApplyRope(const at::Tensor& x, const RopeTable& table) {
  const int64_t tokens = x.size(2);
  const int64_t half = x.size(3) / 2;
  at::Tensor cos = table.cos.narrow(0, 0, tokens);
  at::Tensor sin = table.sin.narrow(0, 0, tokens);
  at::Tensor x1 = x.narrow(-1, 0, half);
  at::Tensor x2 = x.narrow(-1, half, half);
  at::Tensor rotated = at::cat({-x2, x1}, -1);
  return x * cos + rotated * sin;
}

}  // namespace ptq
