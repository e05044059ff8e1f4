#include "worker/attention_statistics.h"

#include <ATen/ATen.h>

namespace ptq::worker {

AttentionStatistics::AttentionStatistics(const ModelConfig& config, int64_t seq_len)
    : config_(config) {
  const int64_t hd = config.head_dim;
  // Column b of R_i is RoPE applied to the basis vector e_b at position i.
  RopeTable table = BuildRopeTable(config, seq_len);
  at::Tensor basis = at::eye(hd, at::kFloat).unsqueeze(1).unsqueeze(1).expand({hd, 1, seq_len, hd});
  at::Tensor rotated = ApplyRope(basis.contiguous(), table);          // [hd(b), 1, T, hd]
  rotations_ = rotated.squeeze(1).permute({1, 2, 0}).to(at::kDouble);  // [T, hd(row), hd(b)]
  key_sum_ = ExactSum({config.num_key_value_heads, hd, hd}, at::kCPU);
  query_sum_ = ExactSum({config.num_key_value_heads, hd, hd}, at::kCPU);
}

void AttentionStatistics::OnAttention(const AttentionInternals& in) {
  const int64_t kv = config_.num_key_value_heads;
  const int64_t rep = config_.num_attention_heads / kv;
  const int64_t hd = config_.head_dim;
  // keys: [B, KV, T, hd] -> per kv head sum over (B, T) of k k^T.
  at::Tensor k = in.keys.transpose(0, 1).reshape({kv, -1, hd}).to(at::kDouble);
  key_sum_.Add(at::bmm(k.transpose(1, 2), k));
  // queries: [B, H, T, hd]; head h shares kv head h / rep.
  at::Tensor q = in.queries.transpose(0, 1).reshape({kv, rep, -1, hd}).reshape({kv, -1, hd});
  q = q.to(at::kDouble);
  query_sum_.Add(at::bmm(q.transpose(1, 2), q));
  tokens_ += in.keys.size(0) * in.keys.size(2);
}

at::Tensor AttentionStatistics::RotateBack(const at::Tensor& m) const {
  // Score error for a query error dq at position i: dq^T R_i^T k~; averaged over positions.
  const at::Tensor& r = rotations_;
  at::Tensor rt_m_r = at::matmul(at::matmul(r.transpose(1, 2), m), r);  // [T, hd, hd]
  return rt_m_r.mean(0);
}

std::vector<at::Tensor> AttentionStatistics::QueryOutputHessians() const {
  const int64_t rep = config_.num_attention_heads / config_.num_key_value_heads;
  std::vector<at::Tensor> out;
  const at::Tensor key_sum = key_sum_.Value();
  for (int64_t h = 0; h < config_.num_attention_heads; ++h) {
    out.push_back(RotateBack(key_sum[h / rep] / std::max<int64_t>(tokens_, 1)));
  }
  return out;
}

std::vector<at::Tensor> AttentionStatistics::KeyOutputHessians() const {
  const int64_t rep = config_.num_attention_heads / config_.num_key_value_heads;
  std::vector<at::Tensor> out;
  const at::Tensor query_sum = query_sum_.Value();
  for (int64_t g = 0; g < config_.num_key_value_heads; ++g) {
    out.push_back(RotateBack(query_sum[g] / std::max<int64_t>(tokens_ * rep, 1)));
  }
  return out;
}

}  // namespace ptq::worker
