// Per-head output Hessians of q_proj / k_proj: the quadratic form d^T H_out d must equal the mean
// squared attention-score error that a pre-RoPE query (key) change d causes, computed directly by
// rotating d with ApplyRope at every position and dotting with every key (query) of the head's group.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <array>

#include "core/stats/attention_statistics.h"

namespace ptq {
namespace {

ModelConfig TinyConfig() {
  ModelConfig c;
  c.model_type = "llama";
  c.hidden_size = 32;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;  // two query heads per key/value head
  c.head_dim = 8;
  c.rope_theta = 100.0;
  return c;
}

// Mean over query positions i and all (batch, position j) of the other side of ((R_i d) . o_j)^2.
// centered: each position's errors less their mean over j first (the part softmax sees).
double ScoreErrorByBruteForce(const at::Tensor& d, const at::Tensor& others, const RopeTable& rope,
                              int64_t tokens, bool centered = false) {
  // others: [n, hd] (already RoPE'd); d: [hd] before RoPE.
  at::Tensor rd = ApplyRope(d.to(at::kFloat).view({1, 1, 1, -1}).expand({1, 1, tokens, d.size(0)})
                                .contiguous(),
                            rope)
                      .view({tokens, -1})
                      .to(at::kDouble);  // row i: R_i d
  at::Tensor errors = at::matmul(rd, others.t());  // [i, j]
  if (centered) errors = errors - errors.mean(1, /*keepdim=*/true);
  return errors.pow(2).mean().item<double>();
}

// Random RoPE'd queries and keys, values and attention probabilities of one batch.
std::array<at::Tensor, 4> RandomAttention(const ModelConfig& c, int64_t batch, int64_t tokens,
                                          const RopeTable& rope) {
  const int64_t hd = c.head_dim;
  return {ApplyRope(at::randn({batch, c.num_attention_heads, tokens, hd}), rope),
          ApplyRope(at::randn({batch, c.num_key_value_heads, tokens, hd}), rope),
          at::randn({batch, c.num_key_value_heads, tokens, hd}),
          at::softmax(at::randn({batch, c.num_attention_heads, tokens, tokens}), -1)};
}

TEST(AttentionStatisticsTest, OutputHessiansGiveTheScoreErrorWithGroupedQueryHeads) {
  const ModelConfig c = TinyConfig();
  const int64_t batch = 3, tokens = 5, hd = c.head_dim;
  RopeTable rope = BuildRopeTable(c, tokens);
  at::manual_seed(0);
  auto [q, k, v, p] = RandomAttention(c, batch, tokens, rope);
  AttentionStatistics stats(c, tokens);
  // Two calls: the sums accumulate like two calibration batches.
  for (int64_t b = 0; b < batch; b += 2) {
    const int64_t n = std::min<int64_t>(2, batch - b);
    at::Tensor qb = q.narrow(0, b, n), kb = k.narrow(0, b, n), vb = v.narrow(0, b, n),
               pb = p.narrow(0, b, n);
    stats.OnAttention({qb, kb, vb, pb});
  }
  std::vector<at::Tensor> hq = stats.QueryOutputHessians();
  std::vector<at::Tensor> hk = stats.KeyOutputHessians();
  AttentionStatistics centered_stats(c, tokens, QkHessian::kCovariance);
  centered_stats.OnAttention({q, k, v, p});
  std::vector<at::Tensor> hq_centered = centered_stats.QueryOutputHessians();
  ASSERT_EQ(hq.size(), 4u);
  ASSERT_EQ(hq_centered.size(), 4u);
  ASSERT_EQ(hk.size(), 2u);
  for (int trial = 0; trial < 3; ++trial) {
    at::Tensor d = at::randn({hd}, at::kDouble);
    for (int64_t h = 0; h < c.num_attention_heads; ++h) {
      // Query head h attends with key/value head h / 2.
      at::Tensor keys = k.select(1, h / 2).reshape({-1, hd}).to(at::kDouble);
      const double brute = ScoreErrorByBruteForce(d, keys, rope, tokens);
      EXPECT_NEAR(at::dot(d, at::mv(hq[h], d)).item<double>(), brute, 1e-4 * brute) << h;
      const double centered = ScoreErrorByBruteForce(d, keys, rope, tokens, /*centered=*/true);
      EXPECT_NEAR(at::dot(d, at::mv(hq_centered[h], d)).item<double>(), centered, 1e-4 * centered)
          << h;
      EXPECT_LT(centered, brute) << h;  // random keys have a nonzero mean
    }
    for (int64_t g = 0; g < c.num_key_value_heads; ++g) {
      // Key head g is used by query heads 2g and 2g + 1.
      at::Tensor queries = q.narrow(1, 2 * g, 2).reshape({-1, hd}).to(at::kDouble);
      const double brute = ScoreErrorByBruteForce(d, queries, rope, tokens);
      EXPECT_NEAR(at::dot(d, at::mv(hk[g], d)).item<double>(), brute, 1e-4 * brute) << g;
    }
  }
}

// Qwen3: q and k pass a per-head RMSNorm with gains g before RoPE. A change d of the normalized
// vector (before the gain) moves the score by (R_i (g * d)) . k_j exactly, so d^T H_out d must equal
// the brute-force score error of g * d: H_out is carried through the gain (the 1/rms factor, common
// to a head's rows, and the radial projection are what the statistics leave out).
TEST(AttentionStatisticsTest, QkNormGainsCarryTheOutputHessiansBackThroughTheNorm) {
  const ModelConfig c = TinyConfig();
  const int64_t batch = 2, tokens = 5, hd = c.head_dim;
  RopeTable rope = BuildRopeTable(c, tokens);
  at::manual_seed(4);
  auto [q, k, v, p] = RandomAttention(c, batch, tokens, rope);
  at::Tensor gq = 1 + at::rand({hd}) * 2, gk = 0.5 + at::rand({hd});
  for (QkHessian kind : {QkHessian::kMoment, QkHessian::kSoftmax}) {
    ModelConfig qwen3 = c;
    qwen3.qk_norm = true;
    AttentionStatistics plain(c, tokens, kind), normed(qwen3, tokens, kind);
    plain.OnAttention({q, k, v, p});
    // Two batches (float32 sums in the softmax form: 1e-5): the gains come back from their
    // token-weighted sum.
    normed.OnAttention({q.narrow(0, 0, 1), k.narrow(0, 0, 1), v.narrow(0, 0, 1), p.narrow(0, 0, 1),
                        gq, gk});
    normed.OnAttention({q.narrow(0, 1, 1), k.narrow(0, 1, 1), v.narrow(0, 1, 1), p.narrow(0, 1, 1),
                        gq, gk});
    std::vector<at::Tensor> hq = normed.QueryOutputHessians(), hq0 = plain.QueryOutputHessians();
    std::vector<at::Tensor> hk = normed.KeyOutputHessians(), hk0 = plain.KeyOutputHessians();
    for (int trial = 0; trial < 3; ++trial) {
      at::Tensor d = at::randn({hd}, at::kDouble);
      at::Tensor dq = d * gq.to(at::kDouble), dk = d * gk.to(at::kDouble);
      for (int64_t h = 0; h < c.num_attention_heads; ++h) {
        const double want = at::dot(dq, at::mv(hq0[h], dq)).item<double>();
        EXPECT_NEAR(at::dot(d, at::mv(hq[h], d)).item<double>(), want, 1e-5 * want) << h;
        if (kind == QkHessian::kMoment) {
          at::Tensor keys = k.select(1, h / 2).reshape({-1, hd}).to(at::kDouble);
          const double brute = ScoreErrorByBruteForce(dq, keys, rope, tokens);
          EXPECT_NEAR(at::dot(d, at::mv(hq[h], d)).item<double>(), brute, 1e-4 * brute) << h;
        }
      }
      for (int64_t g = 0; g < c.num_key_value_heads; ++g) {
        const double want = at::dot(dk, at::mv(hk0[g], dk)).item<double>();
        EXPECT_NEAR(at::dot(d, at::mv(hk[g], d)).item<double>(), want, 1e-5 * want) << g;
        if (kind == QkHessian::kMoment) {
          at::Tensor queries = q.narrow(1, 2 * g, 2).reshape({-1, hd}).to(at::kDouble);
          const double brute = ScoreErrorByBruteForce(dk, queries, rope, tokens);
          EXPECT_NEAR(at::dot(d, at::mv(hk[g], d)).item<double>(), brute, 1e-4 * brute) << g;
        }
      }
    }
  }
}

// kSoftmax: d^T H_out d must be the mean over queries of e^T (diag(p) - p p^T) e, where e are the
// query's score errors against the keys of its own window (q), or, for k, the mean over the
// sharing heads' (query, key) pairs of p_ij e_ij^2.
TEST(AttentionStatisticsTest, SoftmaxHessiansWeighScoreErrorsByTheAttention) {
  const ModelConfig c = TinyConfig();
  const int64_t batch = 3, tokens = 6, hd = c.head_dim;
  RopeTable rope = BuildRopeTable(c, tokens);
  at::manual_seed(1);
  at::Tensor q = ApplyRope(at::randn({batch, c.num_attention_heads, tokens, hd}), rope);
  at::Tensor k = ApplyRope(at::randn({batch, c.num_key_value_heads, tokens, hd}) + 1.5, rope);
  at::Tensor v = at::randn({batch, c.num_key_value_heads, tokens, hd});
  at::Tensor causal = at::ones({tokens, tokens}).tril().log();  // -inf above the diagonal
  at::Tensor p = at::softmax(2 * at::randn({batch, c.num_attention_heads, tokens, tokens}) + causal, -1);
  AttentionStatistics stats(c, tokens, QkHessian::kSoftmax);
  stats.OnAttention({q.narrow(0, 0, 2), k.narrow(0, 0, 2), v.narrow(0, 0, 2), p.narrow(0, 0, 2)});
  stats.OnAttention({q.narrow(0, 2, 1), k.narrow(0, 2, 1), v.narrow(0, 2, 1), p.narrow(0, 2, 1)});
  std::vector<at::Tensor> hq = stats.QueryOutputHessians();
  std::vector<at::Tensor> hk = stats.KeyOutputHessians();
  ASSERT_EQ(hq.size(), 4u);
  ASSERT_EQ(hk.size(), 2u);
  auto rotated = [&](const at::Tensor& d) {  // row i: R_i d
    return ApplyRope(d.to(at::kFloat).view({1, 1, 1, -1}).expand({1, 1, tokens, hd}).contiguous(),
                     rope)
        .view({tokens, hd})
        .to(at::kDouble);
  };
  const at::Tensor pd = p.to(at::kDouble), qd = q.to(at::kDouble), kd = k.to(at::kDouble);
  for (int trial = 0; trial < 3; ++trial) {
    at::Tensor d = at::randn({hd}, at::kDouble);
    at::Tensor rd = rotated(d);
    for (int64_t h = 0; h < c.num_attention_heads; ++h) {
      double brute = 0;
      for (int64_t b = 0; b < batch; ++b) {
        // e[i, j] = (R_i d) . k_j within window b.
        at::Tensor e = at::matmul(rd, kd[b][h / 2].t());
        at::Tensor pw = pd[b][h];
        at::Tensor mean = (pw * e).sum(1);
        brute += ((pw * e.pow(2)).sum(1) - mean.pow(2)).sum().item<double>();
      }
      brute /= batch * tokens;
      EXPECT_NEAR(at::dot(d, at::mv(hq[h], d)).item<double>(), brute, 1e-4 * brute) << h;
    }
    for (int64_t g = 0; g < c.num_key_value_heads; ++g) {
      double brute = 0;
      for (int64_t b = 0; b < batch; ++b) {
        for (int64_t h = 2 * g; h < 2 * g + 2; ++h) {
          // e[i, j] = q_i . (R_j d) within window b.
          at::Tensor e = at::matmul(qd[b][h], rd.t());
          brute += (pd[b][h] * e.pow(2)).sum().item<double>();
        }
      }
      brute /= batch * tokens * 2;
      EXPECT_NEAR(at::dot(d, at::mv(hk[g], d)).item<double>(), brute, 1e-4 * brute) << g;
    }
  }
}

}  // namespace
}  // namespace ptq
