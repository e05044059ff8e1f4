// TurboBoA feature 2 (error from preceding layers) and BoA's value-block Hessian: the statistics
// against brute-force formulas, the corrected target against the least-squares solution of
// ||W X_f - Q X_q||, and end to end on the demo model: where X_f = X_q (the first block's q/k/v) the
// correction changes nothing, later it does.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "common/model_files.h"
#include "common/safetensors_reader.h"
#include "tests/test_paths.h"
#include "core/quant/boa_quantizer.h"
#include "core/quant/gptq_quantizer.h"
#include "core/stats/hessian_accumulator.h"
#include "core/pipeline/quantize_pipeline.h"
#include "core/quant/residual_correction.h"
#include "core/stats/value_statistics.h"

namespace ptq {
namespace {
namespace fs = std::filesystem;

TEST(CrossTermTest, MatchesTheBruteForceSumOverShards) {
  at::manual_seed(7);
  at::Tensor xq = at::randn({2, 5, 6});
  at::Tensor xf = xq + 0.3 * at::randn({2, 5, 6});
  CrossTermAccumulator a(6), b(6);
  a.Add(xf.narrow(0, 0, 1), xq.narrow(0, 0, 1));
  b.Add(xf.narrow(0, 1, 1), xq.narrow(0, 1, 1));
  a.Merge(b);
  EXPECT_EQ(a.count(), 10);
  at::Tensor f = xf.reshape({-1, 6}).to(at::kDouble), q = xq.reshape({-1, 6}).to(at::kDouble);
  at::Tensor expected = at::zeros({6, 6}, at::kDouble);
  for (int64_t t = 0; t < 10; ++t) expected += at::outer(f[t] - q[t], q[t]);
  EXPECT_TRUE(at::allclose(a.Cross(), expected * (2.0 / 10), 1e-6, 1e-8));
}

TEST(ResidualTargetTest, EqualStreamsChangeNothing) {
  at::manual_seed(8);
  at::Tensor x = at::randn({64, 8});
  CrossTermAccumulator cross(8);
  cross.Add(x, x);
  HessianAccumulator h(8);
  h.Add(x);
  at::Tensor w = at::randn({4, 8});
  auto target = ResidualTarget(w, h.Hessian(), cross.Cross(), 0.25, 0.01, "t");
  ASSERT_TRUE(target.ok()) << target.status();
  EXPECT_TRUE(at::equal(*target, w));
}

TEST(ResidualTargetTest, AlphaOneIsTheLeastSquaresSolutionOfTheFullPrecisionTarget) {
  at::manual_seed(9);
  const int64_t n = 200, in = 10, out = 3;
  at::Tensor xq = at::randn({n, in}, at::kDouble);
  at::Tensor xf = xq + 0.2 * at::randn({n, in}, at::kDouble);
  at::Tensor w = at::randn({out, in});
  CrossTermAccumulator cross(in);
  cross.Add(xf, xq);
  HessianAccumulator h(in);
  h.Add(xq);
  auto target = ResidualTarget(w, h.Hessian(), cross.Cross(), 1.0, /*damp=*/0.0, "t");
  ASSERT_TRUE(target.ok()) << target.status();
  // argmin_Q ||X_f W^T - X_q Q^T||: Q^T = lstsq(X_q, X_f W^T).
  at::Tensor expected = std::get<0>(at::linalg_lstsq(xq, at::matmul(xf, w.to(at::kDouble).t()))).t();
  EXPECT_TRUE(at::allclose(target->to(at::kDouble), expected, 1e-4, 1e-5))
      << (target->to(at::kDouble) - expected).abs().max();
}

// The pipeline takes R from the slot's GPTQ factor instead of factoring H a second time: the same
// bits as ResidualMatrix, dead inputs included; with act-order the factor is of the permuted H and
// is not kept.
TEST(ResidualTargetTest, TheGptqFactorGivesResidualMatrixBitForBit) {
  at::manual_seed(10);
  const int64_t n = 300, in = 12;
  at::Tensor xq = at::randn({n, in});
  xq.select(1, 4).zero_();  // a dead input
  at::Tensor xf = xq + 0.2 * at::randn({n, in});
  CrossTermAccumulator cross(in);
  cross.Add(xf, xq);
  HessianAccumulator h(in);
  h.Add(xq);
  GptqOptions o;
  o.damp = 0.01;
  auto expected = ResidualMatrix(h.Hessian(), cross.Cross(), 0.25, o.damp, "t");
  ASSERT_TRUE(expected.ok()) << expected.status();
  auto factor = PrepareGptq(h.Hessian(), o, "t", /*keep_f64_factor=*/true);
  ASSERT_TRUE(factor.ok()) << factor.status();
  ASSERT_TRUE(factor->u_f64.defined());
  EXPECT_TRUE(at::equal(ResidualMatrixFromFactor(cross.Cross(), factor->u_f64, 0.25), *expected));
  EXPECT_FALSE(PrepareGptq(h.Hessian(), o, "t")->u_f64.defined());  // only where asked for
  o.act_order = true;
  EXPECT_FALSE(PrepareGptq(h.Hessian(), o, "t", true)->u_f64.defined());
}

TEST(ResidualTargetTest, GptqOnTheCorrectedTargetReconstructsTheFullPrecisionOutputBetter) {
  at::manual_seed(10);
  const int64_t n = 512, in = 32, out = 16;
  at::Tensor mix = at::randn({in, in}) * 0.5 + at::eye(in);
  at::Tensor xq = at::matmul(at::randn({n, in}), mix);
  at::Tensor xf = xq + 0.3 * at::matmul(at::randn({n, in}), mix);  // what earlier errors did
  at::Tensor w = at::randn({out, in});
  CrossTermAccumulator cross(in);
  cross.Add(xf, xq);
  HessianAccumulator h(in);
  h.Add(xq);
  GptqOptions o;
  o.grid.bits = 3;
  o.group_size = 16;
  auto fp_error = [&](const at::Tensor& q) {
    return (at::matmul(xf, w.t()) - at::matmul(xq, q.t())).pow(2).sum().item<double>();
  };
  auto plain = GptqQuantize(w, h.Hessian(), o);
  auto target = ResidualTarget(w, h.Hessian(), cross.Cross(), 1.0, o.damp, "t");
  ASSERT_TRUE(plain.ok() && target.ok());
  auto corrected = GptqQuantize(*target, h.Hessian(), o);
  ASSERT_TRUE(corrected.ok());
  // The floor no quantized Q can beat is the unconstrained optimum W' itself; compare the excess.
  const double floor = fp_error(*target);
  const double excess_plain = fp_error(plain->weight) - floor;
  const double excess_corrected = fp_error(corrected->weight) - floor;
  EXPECT_LT(excess_corrected, 0.7 * excess_plain) << floor << " " << excess_plain << " " << excess_corrected;
}

ModelConfig SmallAttentionConfig(int64_t heads, int64_t kv_heads, int64_t head_dim) {
  ModelConfig c;
  c.hidden_size = 12;
  c.num_attention_heads = heads;
  c.num_key_value_heads = kv_heads;
  c.head_dim = head_dim;
  return c;
}

TEST(ValueStatisticsTest, MatchesAttentionWeightedInputsByBruteForce) {
  at::manual_seed(11);
  const int64_t batch = 2, heads = 4, kv = 2, tokens = 5, hidden = 12, hd = 3;
  ModelConfig c = SmallAttentionConfig(heads, kv, hd);
  at::Tensor x = at::randn({batch, tokens, hidden});
  at::Tensor probs = at::softmax(at::randn({batch, heads, tokens, tokens}), -1);
  at::Tensor q = at::randn({batch, heads, tokens, hd}), k = at::randn({batch, kv, tokens, hd});
  ValueStatistics stats(c);
  stats.OnLinearInput(LinearSlot::kAttnIn, x);
  stats.OnAttention({q, k, k, probs});
  std::vector<at::Tensor> h = stats.Hessians();
  ASSERT_EQ(h.size(), 2u);
  for (int64_t g = 0; g < kv; ++g) {
    at::Tensor expected = at::zeros({hidden, hidden}, at::kDouble);
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t head = g * 2; head < g * 2 + 2; ++head) {  // query heads sharing kv head g
        for (int64_t t = 0; t < tokens; ++t) {
          at::Tensor ax = at::zeros({hidden}, at::kDouble);
          for (int64_t s = 0; s < tokens; ++s) {
            ax += probs[b][head][t][s].item<double>() * x[b][s].to(at::kDouble);
          }
          expected += at::outer(ax, ax);
        }
      }
    }
    EXPECT_TRUE(at::allclose(h[g], expected * (2.0 / (batch * tokens)), 1e-5, 1e-7)) << g;
  }
}

TEST(ValueStatisticsTest, SharedHessianPerHeadEqualsGptq) {
  at::manual_seed(12);
  at::Tensor x = at::matmul(at::randn({256, 24}), at::randn({24, 24}) * 0.3 + at::eye(24));
  HessianAccumulator acc(24);
  acc.Add(x);
  at::Tensor h = acc.Hessian();
  at::Tensor w = at::randn({3 * 4, 24});
  GptqOptions o;
  o.grid.bits = 2;
  o.group_size = 8;
  auto per_head = BoaValueQuantize(w, {h, h, h}, o, "v");
  auto gptq = GptqQuantize(w, h, o);
  ASSERT_TRUE(per_head.ok() && gptq.ok());
  EXPECT_TRUE(at::equal(per_head->codes, gptq->codes));
  EXPECT_TRUE(at::allclose(per_head->weight, gptq->weight));
  EXPECT_NEAR(per_head->loss, gptq->loss, 1e-6 * gptq->loss);
  o.act_order = true;
  EXPECT_FALSE(BoaValueQuantize(w, {h, h, h}, o, "v").ok());  // one g_idx cannot hold 3 orders
}

// Block 0's q/k/v see X_f = X_q (both streams start at the embeddings): the correction must leave
// them bit-identical; o_proj reads the output of quantized q/k/v, so there it must act.
TEST(ResidualCorrectionPipelineTest, ChangesNothingWhereStreamsAgreeAndActsWhereTheyDiffer) {
  auto run = [](double alpha, const std::string& name) -> std::string {
    QuantizeOptions o;
    o.model_dir = testing::DemoModelDir();
    o.calib_path = testing::DemoCalibText();
    o.out_dir = (fs::temp_directory_path() / ("ptq_residual_test_" + name)).string();
    fs::remove_all(o.out_dir);
    o.method = "turboboa";
    o.format = "dequantized";
    o.residual_alpha = alpha;
    o.samples = 8;
    o.seq_len = 64;
    o.gptq.grid.bits = 2;
    o.gptq.group_size = 64;
    auto r = RunQuantize(o);
    EXPECT_TRUE(r.ok()) << r.status();
    return o.out_dir;
  };
  const std::string off = run(0.0, "off"), on = run(0.5, "on");
  auto a = ModelFiles::Open(off);
  auto b = ModelFiles::Open(on);
  ASSERT_TRUE(a.ok() && b.ok());
  auto tensor = [](const ModelFiles& f, const std::string& name) {
    auto view = f.Get(name);
    EXPECT_TRUE(view.ok()) << name;
    return at::from_blob(const_cast<void*>(static_cast<const void*>(view->data)), view->shape,
                         at::kFloat).clone();
  };
  for (const char* same : {"q_proj", "k_proj", "v_proj"}) {
    const std::string name = std::string("model.layers.0.self_attn.") + same + ".weight";
    EXPECT_TRUE(at::equal(tensor(**a, name), tensor(**b, name))) << name;
  }
  for (const char* differs : {"model.layers.0.self_attn.o_proj.weight",
                              "model.layers.0.mlp.down_proj.weight",
                              "model.layers.1.self_attn.q_proj.weight"}) {
    EXPECT_FALSE(at::equal(tensor(**a, differs), tensor(**b, differs))) << differs;
  }
}

}  // namespace
}  // namespace ptq
