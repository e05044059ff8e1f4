// Per-head output Hessians of q_proj / k_proj: the quadratic form d^T H_out d must equal the mean
// squared attention-score error that a pre-RoPE query (key) change d causes, computed directly by
// rotating d with ApplyRope at every position and dotting with every key (query) of the head's group.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "worker/attention_statistics.h"

namespace ptq::worker {
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
double ScoreErrorByBruteForce(const at::Tensor& d, const at::Tensor& others, const RopeTable& rope,
                              int64_t tokens) {
  // others: [n, hd] (already RoPE'd); d: [hd] before RoPE.
  at::Tensor rd = ApplyRope(d.to(at::kFloat).view({1, 1, 1, -1}).expand({1, 1, tokens, d.size(0)})
                                .contiguous(),
                            rope)
                      .view({tokens, -1})
                      .to(at::kDouble);  // row i: R_i d
  return at::matmul(rd, others.t()).pow(2).mean().item<double>();
}

TEST(AttentionStatisticsTest, OutputHessiansGiveTheScoreErrorWithGroupedQueryHeads) {
  const ModelConfig c = TinyConfig();
  const int64_t batch = 3, tokens = 5, hd = c.head_dim;
  RopeTable rope = BuildRopeTable(c, tokens);
  at::manual_seed(0);
  at::Tensor q = ApplyRope(at::randn({batch, c.num_attention_heads, tokens, hd}), rope);
  at::Tensor k = ApplyRope(at::randn({batch, c.num_key_value_heads, tokens, hd}), rope);
  at::Tensor v = at::randn({batch, c.num_key_value_heads, tokens, hd});
  at::Tensor p = at::softmax(at::randn({batch, c.num_attention_heads, tokens, tokens}), -1);
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
  ASSERT_EQ(hq.size(), 4u);
  ASSERT_EQ(hk.size(), 2u);
  for (int trial = 0; trial < 3; ++trial) {
    at::Tensor d = at::randn({hd}, at::kDouble);
    for (int64_t h = 0; h < c.num_attention_heads; ++h) {
      // Query head h attends with key/value head h / 2.
      at::Tensor keys = k.select(1, h / 2).reshape({-1, hd}).to(at::kDouble);
      const double brute = ScoreErrorByBruteForce(d, keys, rope, tokens);
      EXPECT_NEAR(at::dot(d, at::mv(hq[h], d)).item<double>(), brute, 1e-4 * brute) << h;
    }
    for (int64_t g = 0; g < c.num_key_value_heads; ++g) {
      // Key head g is used by query heads 2g and 2g + 1.
      at::Tensor queries = q.narrow(1, 2 * g, 2).reshape({-1, hd}).to(at::kDouble);
      const double brute = ScoreErrorByBruteForce(d, queries, rope, tokens);
      EXPECT_NEAR(at::dot(d, at::mv(hk[g], d)).item<double>(), brute, 1e-4 * brute) << g;
    }
  }
}

}  // namespace
}  // namespace ptq::worker
