// BlockForward against an independent computation written token by token with plain loops: explicit
// RoPE pairs (i, i + d/2) with angles in double, causal attention over s <= t (and t - window < s with
// a sliding window), GQA by index, Qwen3's per-head RMSNorm of each query and key before RoPE.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "core/model/llama_block.h"

namespace ptq {
namespace {

ModelConfig SmallConfig() {
  ModelConfig c;
  c.model_type = "llama";
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.vocab_size = 16;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 500.0;
  return c;
}

BlockWeights RandomBlock(const ModelConfig& c, bool bias, bool qk_norm = false) {
  BlockWeights w;
  auto r = [](int64_t o, int64_t i) { return at::randn({o, i}, at::kFloat) * 0.3; };
  const int64_t qd = c.num_attention_heads * c.head_dim, kvd = c.num_key_value_heads * c.head_dim;
  w.input_norm = 1 + 0.1 * at::randn({c.hidden_size});
  w.post_norm = 1 + 0.1 * at::randn({c.hidden_size});
  w.q = r(qd, c.hidden_size);
  w.k = r(kvd, c.hidden_size);
  w.v = r(kvd, c.hidden_size);
  w.o = r(c.hidden_size, qd);
  w.gate = r(c.intermediate_size, c.hidden_size);
  w.up = r(c.intermediate_size, c.hidden_size);
  w.down = r(c.hidden_size, c.intermediate_size);
  if (bias) {
    w.q_bias = at::randn({qd}) * 0.1;
    w.k_bias = at::randn({kvd}) * 0.1;
    w.v_bias = at::randn({kvd}) * 0.1;
  }
  if (qk_norm) {
    w.q_norm = 1 + 0.5 * at::randn({c.head_dim});
    w.k_norm = 1 + 0.5 * at::randn({c.head_dim});
  }
  return w;
}

// One token's block output, computed from scratch with loops.
std::vector<double> Reference(const at::Tensor& x /*[T, D] double*/, const BlockWeights& w64,
                              const ModelConfig& c, int64_t t_out) {
  const int64_t T = x.size(0), D = c.hidden_size, hd = c.head_dim;
  const int64_t H = c.num_attention_heads, KV = c.num_key_value_heads;
  auto rms = [&](at::Tensor v, const at::Tensor& g) {
    const int64_t n = v.size(0);
    double ss = 0;
    for (int64_t i = 0; i < n; ++i) ss += v[i].item<double>() * v[i].item<double>();
    return v * (1.0 / std::sqrt(ss / n + c.rms_norm_eps)) * g;
  };
  auto head_norm = [&](at::Tensor v, const at::Tensor& g) { return g.defined() ? rms(v, g) : v; };
  auto rope = [&](at::Tensor v, int64_t pos) {  // v: [hd]
    at::Tensor out = v.clone();
    for (int64_t i = 0; i < hd / 2; ++i) {
      double angle = pos * std::pow(c.rope_theta, -2.0 * i / hd);
      double a = v[i].item<double>(), b = v[i + hd / 2].item<double>();
      out[i] = a * std::cos(angle) - b * std::sin(angle);
      out[i + hd / 2] = b * std::cos(angle) + a * std::sin(angle);
    }
    return out;
  };
  std::vector<at::Tensor> qs, ks, vs;
  for (int64_t t = 0; t < T; ++t) {
    at::Tensor n = rms(x[t], w64.input_norm);
    at::Tensor q = at::mv(w64.q, n), k = at::mv(w64.k, n), v = at::mv(w64.v, n);
    if (w64.q_bias.defined()) {
      q = q + w64.q_bias;
      k = k + w64.k_bias;
      v = v + w64.v_bias;
    }
    qs.push_back(q);
    ks.push_back(k);
    vs.push_back(v);
  }
  at::Tensor attn = at::zeros({H * hd}, at::kDouble);
  for (int64_t h = 0; h < H; ++h) {
    const int64_t kvh = h / (H / KV);
    at::Tensor q = rope(head_norm(qs[t_out].narrow(0, h * hd, hd), w64.q_norm), t_out);
    // Keys s in (t_out - window, t_out]; all s <= t_out without a window.
    const int64_t first = w64.attention_window > 0
                              ? std::max<int64_t>(0, t_out - w64.attention_window + 1)
                              : 0;
    std::vector<double> scores;
    double mx = -1e300;
    for (int64_t s = first; s <= t_out; ++s) {
      at::Tensor k = rope(head_norm(ks[s].narrow(0, kvh * hd, hd), w64.k_norm), s);
      scores.push_back(at::dot(q, k).item<double>() / std::sqrt(double(hd)));
      mx = std::max(mx, scores.back());
    }
    double z = 0;
    for (double& sc : scores) z += (sc = std::exp(sc - mx));
    for (int64_t s = first; s <= t_out; ++s) {
      attn.narrow(0, h * hd, hd).add_(vs[s].narrow(0, kvh * hd, hd) * (scores[s - first] / z));
    }
  }
  at::Tensor h1 = x[t_out] + at::mv(w64.o, attn);
  at::Tensor n2 = rms(h1, w64.post_norm);
  at::Tensor g = at::mv(w64.gate, n2);
  at::Tensor act = g / (1 + at::exp(-g)) * at::mv(w64.up, n2);
  at::Tensor out = h1 + at::mv(w64.down, act);
  return std::vector<double>(out.data_ptr<double>(), out.data_ptr<double>() + D);
}

void CheckAgainstReference(bool bias, int64_t window = 0, bool qk_norm = false,
                           int64_t head_dim = 8) {
  at::manual_seed(bias ? 7 : 3);
  ModelConfig c = SmallConfig();
  c.head_dim = head_dim;
  BlockWeights w = RandomBlock(c, bias, qk_norm);
  w.attention_window = window;
  const int64_t B = 2, T = 6;
  at::Tensor x = at::randn({B, T, c.hidden_size});
  RopeTable rope = BuildRopeTable(c, T);
  at::Tensor out = BlockForward(x, w, c, rope);
  BlockWeights w64 = w;
  for (LinearKind k : kAllLinears) w64.Linear(k) = w.Linear(k).to(at::kDouble);
  w64.input_norm = w.input_norm.to(at::kDouble);
  w64.post_norm = w.post_norm.to(at::kDouble);
  if (bias) {
    w64.q_bias = w.q_bias.to(at::kDouble);
    w64.k_bias = w.k_bias.to(at::kDouble);
    w64.v_bias = w.v_bias.to(at::kDouble);
  }
  if (qk_norm) {
    w64.q_norm = w.q_norm.to(at::kDouble);
    w64.k_norm = w.k_norm.to(at::kDouble);
  }
  for (int64_t b = 0; b < B; ++b) {
    at::Tensor xb = x[b].to(at::kDouble);
    for (int64_t t = 0; t < T; ++t) {
      std::vector<double> ref = Reference(xb, w64, c, t);
      for (int64_t i = 0; i < c.hidden_size; ++i) {
        ASSERT_NEAR(out[b][t][i].item<double>(), ref[i], 1e-4 * (1 + std::fabs(ref[i])))
            << "b " << b << " t " << t << " i " << i;
      }
    }
  }
}

TEST(LlamaBlockTest, MatchesTokenByTokenReferenceWithGqa) { CheckAgainstReference(false); }
TEST(LlamaBlockTest, MatchesTokenByTokenReferenceWithQkvBias) { CheckAgainstReference(true); }
TEST(LlamaBlockTest, MatchesTokenByTokenReferenceWithSlidingWindow) {
  CheckAgainstReference(false, /*window=*/3);
  CheckAgainstReference(true, /*window=*/1);  // each token sees only itself
}
TEST(LlamaBlockTest, MatchesTokenByTokenReferenceWithQkNormAndExplicitHeadDim) {
  // Qwen3: per-head norms before RoPE, head_dim 16 with hidden 32 and 4 heads (q_proj 64 rows).
  CheckAgainstReference(false, /*window=*/0, /*qk_norm=*/true, /*head_dim=*/16);
  CheckAgainstReference(false, /*window=*/4, /*qk_norm=*/true, /*head_dim=*/16);
}

TEST(LlamaBlockTest, AttentionMaskIsCausalWithinTheWindow) {
  // Brute force over every (i, j): masked unless i - window < j <= i.
  for (int64_t window : {0, 1, 3, 5, 9}) {
    at::Tensor m = AttentionMask(6, window, at::TensorOptions());
    for (int64_t i = 0; i < 6; ++i) {
      for (int64_t j = 0; j < 6; ++j) {
        const bool visible = j <= i && (window == 0 || j > i - window);
        EXPECT_EQ(m[i][j].item<bool>(), !visible) << "window " << window << " i " << i << " j " << j;
      }
    }
  }
}

TEST(LlamaBlockTest, ObserverSeesEachSlotInputAndStopSkipsTheRest) {
  at::manual_seed(1);
  ModelConfig c = SmallConfig();
  BlockWeights w = RandomBlock(c, false);
  at::Tensor x = at::randn({1, 5, c.hidden_size});
  RopeTable rope = BuildRopeTable(c, 5);
  struct Recorder : BlockObserver {
    std::vector<std::pair<LinearSlot, std::vector<int64_t>>> seen;
    void OnLinearInput(LinearSlot s, const at::Tensor& t) override {
      seen.emplace_back(s, t.sizes().vec());
    }
  } all, stopped;
  BlockForward(x, w, c, rope, &all);
  ASSERT_EQ(all.seen.size(), 4u);
  EXPECT_EQ(all.seen[1].second, (std::vector<int64_t>{1, 5, 32}));  // o_proj input
  EXPECT_EQ(all.seen[3].second, (std::vector<int64_t>{1, 5, 48}));  // down_proj input
  at::Tensor none = BlockForward(x, w, c, rope, &stopped, LinearSlot::kAttnOut);
  EXPECT_FALSE(none.defined());
  EXPECT_EQ(stopped.seen.size(), 2u);
}

}  // namespace
}  // namespace ptq
