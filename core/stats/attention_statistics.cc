#include "core/stats/attention_statistics.h"

#include <ATen/ATen.h>

namespace ptq {

AttentionStatistics::AttentionStatistics(const ModelConfig& config, int64_t seq_len, QkHessian kind,
                                         c10::Device device)
    : config_(config), kind_(kind) {
  const int64_t hd = config.head_dim;
  // Column b of R_i is RoPE applied to the basis vector e_b at position i.
  RopeTable table = BuildRopeTable(config, seq_len);
  at::Tensor basis = at::eye(hd, at::kFloat).unsqueeze(1).unsqueeze(1).expand({hd, 1, seq_len, hd});
  at::Tensor rotated = ApplyRope(basis.contiguous(), table);          // [hd(b), 1, T, hd]
  // Built on the host, so every device uses the same rotations.
  rotations_ = rotated.squeeze(1).permute({1, 2, 0}).to(at::kDouble).to(device);  // [T, hd(row), hd(b)]
  const int64_t key_heads =
      kind == QkHessian::kSoftmax ? config.num_attention_heads : config.num_key_value_heads;
  key_sum_ = ExactSum({key_heads, hd, hd}, device);
  query_sum_ = ExactSum({config.num_key_value_heads, hd, hd}, device);
  key_mean_sum_ = ExactSum({config.num_key_value_heads, hd}, device);
  gain_sum_ = ExactSum({2, hd}, device);
}

void AttentionStatistics::OnAttention(const AttentionInternals& in) {
  const int64_t tokens = in.keys.size(0) * in.keys.size(2);
  tokens_ += tokens;
  if (config_.qk_norm) {
    gain_sum_.Add(at::stack({in.q_norm, in.k_norm}).to(at::kDouble) * static_cast<double>(tokens));
  }
  if (kind_ == QkHessian::kSoftmax) {
    AddSoftmax(in);
    return;
  }
  const int64_t kv = config_.num_key_value_heads;
  const int64_t rep = config_.num_attention_heads / kv;
  const int64_t hd = config_.head_dim;
  // keys: [B, KV, T, hd] -> per kv head sum over (B, T) of k k^T.
  at::Tensor k = in.keys.transpose(0, 1).reshape({kv, -1, hd}).to(at::kDouble);
  key_sum_.Add(at::bmm(k.transpose(1, 2), k));
  key_mean_sum_.Add(k.sum(1));
  // queries: [B, H, T, hd]; head h shares kv head h / rep.
  at::Tensor q = in.queries.transpose(0, 1).reshape({kv, rep, -1, hd}).reshape({kv, -1, hd});
  q = q.to(at::kDouble);
  query_sum_.Add(at::bmm(q.transpose(1, 2), q));
}

void AttentionStatistics::AddSoftmax(const AttentionInternals& in) {
  const int64_t b = in.keys.size(0), t = in.keys.size(2);
  const int64_t kv = config_.num_key_value_heads;
  const int64_t rep = config_.num_attention_heads / kv;
  const int64_t hd = config_.head_dim;
  std::vector<at::Tensor> q_terms, k_terms;
  // One kv head at a time bounds the [rep * T, hd^2] intermediates. The weighted sums are float32
  // GEMMs (as the forward); each query's covariance is formed in float64.
  for (int64_t g = 0; g < kv; ++g) {
    at::Tensor p = in.probs.narrow(1, g * rep, rep).to(at::kFloat);   // [B, rep, T(i), T(j)]
    at::Tensor k = in.keys.select(1, g).to(at::kFloat);                // [B, T(j), hd]
    at::Tensor q = in.queries.narrow(1, g * rep, rep).to(at::kFloat);  // [B, rep, T(i), hd]
    // q: per query (b, r, i), sum_j p_ij k_j k_j^T - m_i m_i^T with m_i = sum_j p_ij k_j; the
    // first term summed over the batch in one GEMM (windows attend only within themselves).
    at::Tensor kk = (k.unsqueeze(3) * k.unsqueeze(2)).reshape({b * t, hd * hd});
    at::Tensor p_rows = p.permute({1, 2, 0, 3}).reshape({rep * t, b * t});  // [(r,i), (b,j)]
    at::Tensor weighted = at::matmul(p_rows, kk).to(at::kDouble).reshape({rep, t, hd, hd});
    at::Tensor m = at::matmul(p.reshape({b, rep * t, t}), k).to(at::kDouble);  // [B, rep*T, hd]
    at::Tensor mt = m.permute({1, 2, 0});                                       // [rep*T, hd, B]
    at::Tensor mean_outer = at::bmm(mt, mt.transpose(1, 2)).reshape({rep, t, hd, hd});
    q_terms.push_back(RotateBackEach(weighted - mean_outer));  // [rep, hd, hd]
    // k: per key (b, j), sum over the sharing heads' queries i of p_ij q_i q_i^T.
    at::Tensor qq = (q.unsqueeze(4) * q.unsqueeze(3)).reshape({b * rep * t, hd * hd});
    at::Tensor p_cols = p.permute({3, 0, 1, 2}).reshape({t, b * rep * t});  // [j, (b,r,i)]
    at::Tensor moment = at::matmul(p_cols, qq).to(at::kDouble).reshape({t, hd, hd});
    k_terms.push_back(RotateBackEach(moment));
  }
  key_sum_.Add(at::cat(q_terms, 0));   // [heads, hd, hd]
  query_sum_.Add(at::stack(k_terms));  // [kv, hd, hd]
}

at::Tensor AttentionStatistics::RotateBack(const at::Tensor& m) const {
  // Score error for a query error dq at position i: dq^T R_i^T k~; averaged over positions.
  const at::Tensor& r = rotations_;
  at::Tensor rt_m_r = at::matmul(at::matmul(r.transpose(1, 2), m), r);  // [T, hd, hd]
  return rt_m_r.mean(0);
}

at::Tensor AttentionStatistics::RotateBackEach(const at::Tensor& m) const {
  const int64_t t = m.size(-3);
  at::Tensor rt = rotations_.narrow(0, 0, t).to(m.device());  // m lives where the forward ran
  return at::matmul(at::matmul(rt.transpose(1, 2), m), rt).sum(-3);
}

at::Tensor AttentionStatistics::ThroughNorm(const at::Tensor& m, int64_t row) const {
  if (!config_.qk_norm) return m;
  at::Tensor g = (gain_sum_.Value()[row] / static_cast<double>(std::max<int64_t>(tokens_, 1)))
                     .to(m.device());
  return g.unsqueeze(1) * m * g.unsqueeze(0);
}

std::vector<at::Tensor> AttentionStatistics::QueryOutputHessians() const {
  const int64_t rep = config_.num_attention_heads / config_.num_key_value_heads;
  const double n = static_cast<double>(std::max<int64_t>(tokens_, 1));
  std::vector<at::Tensor> out;
  if (kind_ == QkHessian::kSoftmax) {
    const at::Tensor sum = key_sum_.Value() / n;  // already rotated back; weights sum to 1 per query
    for (int64_t h = 0; h < config_.num_attention_heads; ++h) {
      out.push_back(ThroughNorm(sum[h], 0));
    }
    return out;
  }
  at::Tensor moment = key_sum_.Value() / n;  // [kv, hd, hd]
  if (kind_ == QkHessian::kCovariance) {
    at::Tensor mean = key_mean_sum_.Value() / n;  // [kv, hd]
    moment = moment - mean.unsqueeze(2) * mean.unsqueeze(1);
  }
  for (int64_t h = 0; h < config_.num_attention_heads; ++h) {
    out.push_back(ThroughNorm(RotateBack(moment[h / rep]), 0));
  }
  return out;
}

std::vector<at::Tensor> AttentionStatistics::KeyOutputHessians() const {
  const int64_t rep = config_.num_attention_heads / config_.num_key_value_heads;
  std::vector<at::Tensor> out;
  const at::Tensor query_sum = query_sum_.Value() / std::max<int64_t>(tokens_ * rep, 1);
  for (int64_t g = 0; g < config_.num_key_value_heads; ++g) {
    out.push_back(ThroughNorm(kind_ == QkHessian::kSoftmax ? query_sum[g] : RotateBack(query_sum[g]),
                              1));
  }
  return out;
}

}  // namespace ptq
