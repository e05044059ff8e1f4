#include "core/stats/value_statistics.h"

#include <ATen/ATen.h>

namespace ptq {

ValueStatistics::ValueStatistics(const ModelConfig& config, c10::Device device)
    : config_(config),
      sum_({config.num_key_value_heads, config.hidden_size, config.hidden_size}, device) {}

void ValueStatistics::OnLinearInput(LinearSlot slot, const at::Tensor& x) {
  if (slot == LinearSlot::kAttnIn) input_ = x;
}

void ValueStatistics::OnAttention(const AttentionInternals& in) {
  if (!input_.defined()) return;
  const int64_t batch = in.probs.size(0);
  const int64_t heads = in.probs.size(1);
  const int64_t tokens = in.probs.size(2);
  const int64_t kv = config_.num_key_value_heads;
  const int64_t group = heads / kv;
  const int64_t hidden = input_.size(-1);
  at::Tensor x = input_.to(in.probs.scalar_type());
  std::vector<at::Tensor> products;
  for (int64_t h = 0; h < kv; ++h) {
    // Attention-weighted inputs of the query heads sharing kv head h: [batch, group, tokens, hidden].
    at::Tensor p = in.probs.narrow(1, h * group, group);
    at::Tensor ax = at::matmul(p, x.unsqueeze(1)).reshape({-1, hidden}).to(at::kFloat);
    products.push_back(at::matmul(ax.t(), ax));
  }
  sum_.Add(at::stack(products));
  count_ += batch * tokens;
  input_ = at::Tensor();
}

std::vector<at::Tensor> ValueStatistics::Hessians() const {
  std::vector<at::Tensor> out;
  const double scale = count_ > 0 ? 2.0 / static_cast<double>(count_) : 0.0;
  at::Tensor sum = sum_.Value();
  for (int64_t h = 0; h < sum.size(0); ++h) out.push_back(sum[h] * scale);
  return out;
}

}  // namespace ptq
