// QuantizeLayer's requantization passes (--requant-passes): every unit (q/k head, value head, row
// chunk) keeps its lowest-objective pass, so no unit's loss rises over one pass, and the kept rows
// are consistent (codes, scales and zeros of one pass reproduce the dequantized weight).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "core/quant/boa_quantizer.h"
#include "core/quant/layer_shard.h"

namespace ptq {
namespace {

at::Tensor RandomSpd(int64_t n, int64_t tokens) {
  at::Tensor mix = at::randn({n, n}, at::kDouble) / std::sqrt(double(n)) + at::eye(n, at::kDouble);
  at::Tensor x = at::matmul(at::randn({tokens, n}, at::kDouble), mix);
  return at::matmul(x.t(), x) * (2.0 / tokens);
}

LayerSettings Settings(int passes, bool act_order) {
  LayerSettings s;
  s.gptq.grid.bits = 2;
  s.gptq.grid.mse = true;
  s.gptq.grid.hessian_search = true;
  s.gptq.group_size = 16;
  s.gptq.act_order = act_order;
  s.gptq.static_groups = act_order;
  s.joint_rows = 4;
  s.refine_iters = 2;
  s.requant_passes = passes;
  return s;
}

// The objective of rows [r0, r0 + n) as the layer's method defines it.
using UnitLoss = std::function<double(const at::Tensor& q, int64_t r0, int64_t n)>;

void ExpectNoUnitWorse(const LayerProblem& p, bool act_order, int64_t unit_rows,
                       const UnitLoss& loss) {
  auto group = MakeSingleProcessCollective();
  auto one = QuantizeLayer(p, Settings(0, act_order), *group);
  auto three = QuantizeLayer(p, Settings(2, act_order), *group);
  ASSERT_TRUE(one.ok()) << one.status();
  ASSERT_TRUE(three.ok()) << three.status();
  EXPECT_TRUE(at::equal(DequantizeLinear(three->q), three->q.weight));
  EXPECT_TRUE(at::equal(three->q.g_idx, one->q.g_idx));
  int improved = 0;
  const int64_t rows = p.weight.size(0);
  for (int64_t r0 = 0; r0 < rows; r0 += unit_rows) {
    const int64_t n = std::min(unit_rows, rows - r0);
    const double before = loss(one->q.weight, r0, n), after = loss(three->q.weight, r0, n);
    EXPECT_LE(after, before) << "unit at row " << r0;
    if (after < before) ++improved;
  }
  // The passes must do something on these problems, or the test checks nothing.
  EXPECT_GT(improved, 0);
  EXPECT_LE(three->loss, one->loss);
}

TEST(LayerShardTest, RequantPassesNeverRaiseARowChunksLoss) {
  for (bool act_order : {false, true}) {
    at::manual_seed(31);
    LayerProblem p;
    p.name = "mlp";
    p.weight = at::randn({300, 64});  // row chunks of 128, 128 and 44
    p.hessian = RandomSpd(64, 400);
    ExpectNoUnitWorse(p, act_order, kRowUnit, [&](const at::Tensor& q, int64_t r0, int64_t n) {
      return LayerLoss(p.weight.narrow(0, r0, n), q.narrow(0, r0, n), p.hessian);
    });
  }
}

// `heads` heads of 16 rows over 48 inputs with a random input Hessian.
LayerProblem HeadProblem(const std::string& name, int64_t heads, uint64_t seed) {
  at::manual_seed(seed);
  LayerProblem p;
  p.name = name;
  p.head_dim = 16;
  p.weight = at::randn({heads * 16, 48});
  p.hessian = RandomSpd(48, 300);
  return p;
}

TEST(LayerShardTest, RequantPassesNeverRaiseAHeadsKroneckerLoss) {
  LayerProblem p = HeadProblem("q_proj", 4, 32);
  for (int h = 0; h < 4; ++h) p.h_out.push_back(RandomSpd(16, 100));
  ExpectNoUnitWorse(p, false, 16, [&](const at::Tensor& q, int64_t r0, int64_t n) {
    return KroneckerLoss(p.weight.narrow(0, r0, n), q.narrow(0, r0, n), p.hessian,
                         {p.h_out[r0 / 16]});
  });
}

TEST(LayerShardTest, RequantPassesNeverRaiseAValueHeadsLoss) {
  LayerProblem p = HeadProblem("v_proj", 2, 33);
  for (int h = 0; h < 2; ++h) p.h_value.push_back(RandomSpd(48, 200));
  ExpectNoUnitWorse(p, true, 16, [&](const at::Tensor& q, int64_t r0, int64_t n) {
    return LayerLoss(p.weight.narrow(0, r0, n), q.narrow(0, r0, n), p.h_value[r0 / 16]);
  });
}

// --value-damp reaches the value heads' GPTQ, and only theirs: the layer equals BoaValueQuantize run
// with that damping, and differs from the run with the shared --damp.
TEST(LayerShardTest, ValueDampDampsTheValueHeadsHessians) {
  LayerProblem p = HeadProblem("v_proj", 2, 34);
  for (int h = 0; h < 2; ++h) p.h_value.push_back(RandomSpd(48, 60));
  LayerSettings s = Settings(0, false);
  s.refine_iters = 0;
  s.value_damp = 0.3;
  auto group = MakeSingleProcessCollective();
  auto layer = QuantizeLayer(p, s, *group);
  ASSERT_TRUE(layer.ok()) << layer.status();
  GptqOptions damped = s.gptq;
  damped.damp = 0.3;
  auto direct = BoaValueQuantize(p.weight, p.h_value, damped, "v_proj", nullptr);
  ASSERT_TRUE(direct.ok()) << direct.status();
  EXPECT_TRUE(at::equal(layer->q.codes, direct->codes));
  EXPECT_TRUE(at::equal(layer->q.weight, direct->weight));
  s.value_damp = s.gptq.damp;
  auto shared = QuantizeLayer(p, s, *group);
  ASSERT_TRUE(shared.ok()) << shared.status();
  EXPECT_FALSE(at::equal(shared->q.codes, layer->q.codes));
}

// A factor the caller shares among the layers of one input (q/k/v, gate/up) is the one used: given
// PrepareGptq's own result the layer is the same bits as without it, and given the factor of another
// damping the layer is the one quantized with that damping (so nothing recomputes it).
TEST(LayerShardTest, SharedFactorIsUsedAsGiven) {
  LayerProblem rows;
  at::manual_seed(35);
  rows.name = "mlp";
  rows.weight = at::randn({200, 64});
  rows.hessian = RandomSpd(64, 400);
  LayerProblem heads = HeadProblem("q_proj", 2, 36);
  for (int h = 0; h < 2; ++h) heads.h_out.push_back(RandomSpd(16, 100));
  auto group = MakeSingleProcessCollective();
  for (LayerProblem* p : {&rows, &heads}) {
    const LayerSettings s = Settings(1, false);
    auto own = QuantizeLayer(*p, s, *group);
    ASSERT_TRUE(own.ok()) << own.status();
    auto factor = PrepareGptq(p->hessian, s.gptq, p->name);
    ASSERT_TRUE(factor.ok()) << factor.status();
    p->factor = std::make_shared<const GptqFactor>(*factor);
    auto shared = QuantizeLayer(*p, s, *group);
    ASSERT_TRUE(shared.ok()) << shared.status();
    EXPECT_TRUE(at::equal(shared->q.codes, own->q.codes)) << p->name;
    EXPECT_TRUE(at::equal(shared->q.scales, own->q.scales)) << p->name;
    EXPECT_EQ(shared->loss, own->loss) << p->name;

    LayerSettings damped = s;
    damped.gptq.damp = 0.5;
    auto other = PrepareGptq(p->hessian, damped.gptq, p->name);
    ASSERT_TRUE(other.ok()) << other.status();
    p->factor = std::make_shared<const GptqFactor>(*other);
    auto given = QuantizeLayer(*p, s, *group);
    p->factor = nullptr;
    auto direct = QuantizeLayer(*p, damped, *group);
    ASSERT_TRUE(given.ok() && direct.ok());
    EXPECT_TRUE(at::equal(given->q.codes, direct->q.codes)) << p->name;
    EXPECT_FALSE(at::equal(given->q.codes, own->q.codes)) << p->name;
  }
}

}  // namespace
}  // namespace ptq
