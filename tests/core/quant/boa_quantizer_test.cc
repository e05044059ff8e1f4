// BoA / TurboBoA and the group-scale refinement on small random problems, against GPTQ, an
// independent row-by-row BoA written with explicit inverses, and brute-force Kronecker losses.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "core/quant/boa_quantizer.h"
#include "core/quant/group_scale_optimizer.h"

namespace ptq {
namespace {

at::Tensor RandomSpd(int64_t n, uint64_t seed, double correlation = 1.0) {
  at::manual_seed(seed);
  at::Tensor a = at::randn({n, n}, at::kDouble) * correlation + at::eye(n, at::kDouble);
  at::Tensor x = at::matmul(at::randn({4 * n, n}, at::kDouble), a);
  return at::matmul(x.t(), x) / (4.0 * n);
}

BoaOptions Options(int bits, int64_t group, int64_t joint) {
  BoaOptions o;
  o.gptq.grid.bits = bits;
  o.gptq.group_size = group;
  o.joint_rows = joint;
  return o;
}

TEST(BoaQuantizerTest, IdentityOutputHessianReducesToGptq) {
  at::manual_seed(1);
  at::Tensor w = at::randn({2 * 8, 32});
  at::Tensor h_in = RandomSpd(32, 2);
  std::vector<at::Tensor> h_out(2, at::eye(8, at::kDouble));
  for (int64_t joint : {1, 4}) {
    auto boa = BoaQuantize(w, h_in, h_out, Options(3, 16, joint), "t");
    auto gptq = GptqQuantize(w, h_in, Options(3, 16, joint).gptq);
    ASSERT_TRUE(boa.ok() && gptq.ok());
    EXPECT_TRUE(at::equal(boa->codes, gptq->codes));
    EXPECT_TRUE(at::equal(boa->weight, gptq->weight));
  }
}

TEST(BoaQuantizerTest, OneJointRowEqualsRowByRowBoaWithExplicitInverses) {
  at::manual_seed(3);
  const int64_t hd = 6, in = 24;
  at::Tensor w = at::randn({hd, in});
  at::Tensor h_in = RandomSpd(in, 4);
  at::Tensor h_out = RandomSpd(hd, 5, 2.0);
  BoaOptions o = Options(2, 8, 1);
  auto ours = BoaQuantize(w, h_in, {h_out}, o, "t");
  ASSERT_TRUE(ours.ok());
  // Independent BoA: fix row r, then move the rows not yet fixed by the GPTQ/OBS update of the
  // damped H_out restricted to them: W_rest -= [H_F^-1]_{rest,r} / [H_F^-1]_{rr} * E_r.
  at::Tensor h = h_out + at::eye(hd, at::kDouble) * (o.damp_out * h_out.diagonal().mean().item<double>());
  at::Tensor cur = w.to(at::kDouble).clone();
  std::vector<at::Tensor> rows;
  for (int64_t r = 0; r < hd; ++r) {
    auto q = GptqQuantize(cur.narrow(0, r, 1).to(at::kFloat), h_in, o.gptq);
    ASSERT_TRUE(q.ok());
    rows.push_back(q->weight);
    if (r + 1 < hd) {
      at::Tensor hinv = at::inverse(h.narrow(0, r, hd - r).narrow(1, r, hd - r));
      at::Tensor e = cur.narrow(0, r, 1) - q->weight.to(at::kDouble);
      at::Tensor coef = hinv.select(1, 0).narrow(0, 1, hd - r - 1) / hinv[0][0];
      cur.narrow(0, r + 1, hd - r - 1).sub_(at::outer(coef, e.squeeze(0)));
    }
  }
  at::Tensor reference = at::cat(rows, 0);
  const double agree = (ours->weight - reference).abs().lt(1e-5).to(at::kDouble).mean().item<double>();
  EXPECT_GT(agree, 0.99);
}

TEST(BoaQuantizerTest, KroneckerLossMatchesBruteForce) {
  at::manual_seed(6);
  const int64_t heads = 2, hd = 3, in = 4;
  at::Tensor w = at::randn({heads * hd, in}, at::kDouble);
  at::Tensor q = w + 0.1 * at::randn({heads * hd, in}, at::kDouble);
  at::Tensor h_in = RandomSpd(in, 7);
  std::vector<at::Tensor> h_out = {RandomSpd(hd, 8), RandomSpd(hd, 9)};
  double brute = 0;
  for (int64_t h = 0; h < heads; ++h) {
    // vec(dW) in row-major order has Hessian H_out (x) H_in.
    at::Tensor d = (w - q).narrow(0, h * hd, hd).reshape({-1});
    at::Tensor kron = at::kron(h_out[h], h_in);
    brute += at::dot(d, at::mv(kron, d)).item<double>();
  }
  EXPECT_NEAR(KroneckerLoss(w, q, h_in, h_out), brute, 1e-9 * std::fabs(brute));
}

TEST(BoaQuantizerTest, OutputCompensationLowersTheKroneckerLossBelowGptq) {
  // A heuristic on each instance (compensated rows are re-quantized on their own grids), so compare
  // totals over several random problems.
  for (int bits : {2, 3}) {
    double total_gptq = 0, total_boa = 0, total_turbo = 0;
    for (uint64_t seed = 0; seed < 6; ++seed) {
      at::manual_seed(seed);
      const int64_t heads = 2, hd = 16, in = 64;
      at::Tensor w = at::randn({heads * hd, in});
      at::Tensor h_in = RandomSpd(in, seed + 10);
      std::vector<at::Tensor> h_out = {RandomSpd(hd, seed + 20, 3.0), RandomSpd(hd, seed + 30, 3.0)};
      auto gptq = GptqQuantize(w, h_in, Options(bits, 32, 1).gptq);
      auto boa = BoaQuantize(w, h_in, h_out, Options(bits, 32, 1), "t");
      auto turbo = BoaQuantize(w, h_in, h_out, Options(bits, 32, 4), "t");
      ASSERT_TRUE(gptq.ok() && boa.ok() && turbo.ok());
      total_gptq += KroneckerLoss(w, gptq->weight, h_in, h_out);
      total_boa += KroneckerLoss(w, boa->weight, h_in, h_out);
      total_turbo += KroneckerLoss(w, turbo->weight, h_in, h_out);
    }
    EXPECT_LT(total_boa, total_gptq) << bits;
    EXPECT_LT(total_turbo, total_gptq) << bits;
  }
}

// --act-order-rows: each head quantized in decreasing diag(H_out) order must equal quantizing that
// head with its rows (and H_out, and any fixed grids) permuted by hand, rows put back afterwards.
TEST(BoaQuantizerTest, ActOrderRowsEqualsQuantizingTheHandPermutedHead) {
  at::manual_seed(11);
  const int64_t heads = 2, hd = 8, in = 32;
  at::Tensor w = at::randn({heads * hd, in});
  at::Tensor h_in = RandomSpd(in, 12);
  std::vector<at::Tensor> h_out;
  for (int64_t h = 0; h < heads; ++h) {
    // Row scales 1..8 shuffled, so the order is far from the stored one.
    at::Tensor d = at::randperm(hd, at::kLong).to(at::kDouble) + 1.0;
    h_out.push_back(RandomSpd(hd, 13 + h, 2.0) * at::outer(d, d).sqrt());
  }
  BoaOptions plain = Options(2, 16, 4);
  BoaOptions ordered = plain;
  ordered.act_order_rows = true;
  auto first = BoaQuantize(w, h_in, h_out, plain, "t");
  ASSERT_TRUE(first.ok());
  const FixedGrids fixed{first->scales, first->zeros, first->g_idx};
  for (const FixedGrids* grids : {static_cast<const FixedGrids*>(nullptr), &fixed}) {
    auto ours = BoaQuantize(w, h_in, h_out, ordered, "t", grids);
    ASSERT_TRUE(ours.ok());
    for (int64_t h = 0; h < heads; ++h) {
      std::vector<double> diag(hd);
      for (int64_t r = 0; r < hd; ++r) diag[r] = h_out[h][r][r].item<double>();
      std::vector<int64_t> perm(hd);
      for (int64_t r = 0; r < hd; ++r) perm[r] = r;
      std::stable_sort(perm.begin(), perm.end(), [&](int64_t a, int64_t b) { return diag[a] > diag[b]; });
      bool identity = true;
      for (int64_t r = 0; r < hd; ++r) identity = identity && perm[r] == r;
      ASSERT_FALSE(identity) << "the test needs an unsorted diagonal";
      at::Tensor p = at::tensor(perm, at::kLong);
      at::Tensor wh = w.narrow(0, h * hd, hd).index_select(0, p);
      at::Tensor hh = h_out[h].index_select(0, p).index_select(1, p);
      FixedGrids head_grids;
      if (grids != nullptr) {
        head_grids = {grids->scales.narrow(0, h * hd, hd).index_select(0, p),
                      grids->zeros.narrow(0, h * hd, hd).index_select(0, p), grids->g_idx};
      }
      auto ref = BoaQuantize(wh, h_in, {hh}, plain, "ref", grids != nullptr ? &head_grids : nullptr);
      ASSERT_TRUE(ref.ok());
      for (int64_t i = 0; i < hd; ++i) {  // the reference's row i is the head's row perm[i]
        const int64_t row = h * hd + perm[i];
        EXPECT_TRUE(at::equal(ours->codes[row], ref->codes[i])) << h << " " << i;
        EXPECT_TRUE(at::equal(ours->weight[row], ref->weight[i])) << h << " " << i;
        EXPECT_TRUE(at::equal(ours->scales[row], ref->scales[i])) << h << " " << i;
        EXPECT_TRUE(at::equal(ours->zeros[row], ref->zeros[i])) << h << " " << i;
      }
    }
  }
  auto unordered = BoaQuantize(w, h_in, h_out, plain, "t");
  auto reordered = BoaQuantize(w, h_in, h_out, ordered, "t");
  ASSERT_TRUE(unordered.ok() && reordered.ok());
  EXPECT_FALSE(at::equal(unordered->codes, reordered->codes)) << "the order changed nothing";
}

// A worker holding some of the heads must get the bits the whole layer gets. The shape of the small
// benchmark model's k_proj (4 heads of 64 rows, 512 inputs), with the default search and the
// Kronecker refinement, at 2 threads. (With the heads side by side in one GPTQ call, a 2-worker
// TurboBoA job on that model wrote another k_proj than a 1-worker job: OpenBLAS's AVX2 float32
// GEMM bits depend on the rows in the call, so BoaQuantizeHeads now takes one head per call.)
TEST(BoaQuantizerTest, EachHeadGetsTheBitsOfTheWholeLayer) {
  at::set_num_threads(2);  // as ptq runs: ATen may then run a batch's products on several threads
  at::manual_seed(21);
  const int64_t heads = 4, hd = 64, in = 512;
  at::Tensor w = at::randn({heads * hd, in});
  at::Tensor h_in = RandomSpd(in, 22);
  std::vector<at::Tensor> h_out;
  for (int64_t h = 0; h < heads; ++h) h_out.push_back(RandomSpd(hd, 23 + h, 2.0));
  for (bool act_order_rows : {false, true}) {
    BoaOptions o = Options(2, 128, 16);  // row blocks of 16, groups of 128, the default search
    o.gptq.grid.mse = true;
    o.gptq.grid.hessian_search = true;
    o.act_order_rows = act_order_rows;
    auto all = BoaQuantize(w, h_in, h_out, o, "all");
    ASSERT_TRUE(all.ok()) << all.status();
    const FixedGrids fixed{all->scales * 1.01, all->zeros, all->g_idx};
    auto all_fixed = BoaQuantize(w, h_in, h_out, o, "all", &fixed);
    ASSERT_TRUE(all_fixed.ok()) << all_fixed.status();
    for (int64_t h = 0; h < heads; ++h) {
      const std::string label = "head " + std::to_string(h) + " act-order rows " +
                                std::to_string(act_order_rows);
      auto alone = BoaQuantize(w.narrow(0, h * hd, hd), h_in, {h_out[h]}, o, "alone");
      ASSERT_TRUE(alone.ok()) << alone.status();
      EXPECT_TRUE(at::equal(all->weight.narrow(0, h * hd, hd), alone->weight)) << label;
      EXPECT_TRUE(at::equal(all->codes.narrow(0, h * hd, hd), alone->codes)) << label;
      EXPECT_TRUE(at::equal(all->scales.narrow(0, h * hd, hd), alone->scales)) << label;
      EXPECT_TRUE(at::equal(all->zeros.narrow(0, h * hd, hd), alone->zeros)) << label;
      const FixedGrids head_fixed = fixed.Rows(h * hd, hd);
      auto alone_fixed = BoaQuantize(w.narrow(0, h * hd, hd), h_in, {h_out[h]}, o, "alone",
                                     &head_fixed);
      ASSERT_TRUE(alone_fixed.ok()) << alone_fixed.status();
      EXPECT_TRUE(at::equal(all_fixed->weight.narrow(0, h * hd, hd), alone_fixed->weight)) << label;
      EXPECT_TRUE(at::equal(all_fixed->codes.narrow(0, h * hd, hd), alone_fixed->codes)) << label;
    }
    // The Kronecker scale refinement that follows (layer_shard.cc): all heads at once or alone.
    QuantizedLinear refined = *all;
    RefineGroupScalesKronecker(refined, w, h_in, h_out, 2);
    for (int64_t h = 0; h < heads; ++h) {
      QuantizedLinear head = *all;
      head.weight = all->weight.narrow(0, h * hd, hd).clone();
      head.codes = all->codes.narrow(0, h * hd, hd).clone();
      head.scales = all->scales.narrow(0, h * hd, hd).clone();
      head.zeros = all->zeros.narrow(0, h * hd, hd).clone();
      RefineGroupScalesKronecker(head, w.narrow(0, h * hd, hd), h_in, {h_out[h]}, 2);
      EXPECT_TRUE(at::equal(refined.scales.narrow(0, h * hd, hd), head.scales)) << "head " << h;
      EXPECT_TRUE(at::equal(refined.weight.narrow(0, h * hd, hd), head.weight)) << "head " << h;
    }
  }
}

TEST(BoaQuantizerTest, HeadsThatDoNotDivideTheRowsAreRefused) {
  at::Tensor w = at::randn({10, 8});
  auto r = BoaQuantize(w, at::eye(8, at::kDouble), {at::eye(3, at::kDouble), at::eye(3, at::kDouble),
                                                    at::eye(3, at::kDouble)}, Options(4, -1, 1), "q");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string(r.status().message()).find("heads"), std::string::npos);
}

TEST(GroupScaleOptimizerTest, RefinementNeverIncreasesTheLayerLoss) {
  for (uint64_t seed = 0; seed < 6; ++seed) {
    for (bool act_order : {false, true}) {
      at::manual_seed(seed);
      at::Tensor w = at::randn({12, 64});
      at::Tensor h = RandomSpd(64, seed + 40, 2.0);
      GptqOptions o;
      o.grid.bits = 2 + seed % 3;
      o.group_size = 16;
      o.act_order = act_order;
      auto q = GptqQuantize(w, h, o);
      ASSERT_TRUE(q.ok());
      QuantizedLinear refined = *q;
      double previous = q->loss;
      for (int it = 0; it < 3; ++it) {
        double loss = RefineGroupScales(refined, w, h, 1).item<double>();
        EXPECT_LE(loss, previous * (1 + 1e-12)) << "seed " << seed << " sweep " << it;
        EXPECT_NEAR(loss, LayerLoss(w, refined.weight, h), 1e-9 * loss);
        previous = loss;
      }
      EXPECT_LT(previous, q->loss);  // closed-form steps find something on random problems
      EXPECT_TRUE(at::equal(refined.codes, q->codes));  // integers stay fixed
      EXPECT_TRUE(at::equal(refined.scales, refined.scales.to(at::kHalf).to(at::kFloat)));
    }
  }
}

TEST(GroupScaleOptimizerTest, KroneckerRefinementNeverIncreasesItsLossAndReducesToRowWise) {
  for (uint64_t seed = 0; seed < 4; ++seed) {
    at::manual_seed(seed);
    const int64_t heads = 2, hd = 6, in = 32;
    at::Tensor w = at::randn({heads * hd, in});
    at::Tensor h_in = RandomSpd(in, seed + 50, 2.0);
    std::vector<at::Tensor> h_out = {RandomSpd(hd, seed + 60, 3.0), RandomSpd(hd, seed + 70, 3.0)};
    auto q = BoaQuantize(w, h_in, h_out, Options(2 + seed % 2, 8, 2), "t");
    ASSERT_TRUE(q.ok());
    QuantizedLinear refined = *q;
    double previous = KroneckerLoss(w, q->weight, h_in, h_out);
    const double start = previous;
    for (int it = 0; it < 3; ++it) {
      const double loss = RefineGroupScalesKronecker(refined, w, h_in, h_out, 1).item<double>();
      EXPECT_LE(loss, previous * (1 + 1e-12)) << "seed " << seed << " sweep " << it;
      EXPECT_NEAR(loss, KroneckerLoss(w, refined.weight, h_in, h_out), 1e-9 * loss);
      previous = loss;
    }
    EXPECT_LT(previous, start);
    EXPECT_TRUE(at::equal(refined.codes, q->codes));
    // With H_out = I the rows decouple: the same steps as the row-wise refinement.
    std::vector<at::Tensor> identity(heads, at::eye(hd, at::kDouble));
    QuantizedLinear a = *q, b = *q;
    RefineGroupScalesKronecker(a, w, h_in, identity, 2);
    RefineGroupScales(b, w, h_in, 2);
    EXPECT_TRUE(at::allclose(a.scales, b.scales, 1e-3, 1e-7));  // one float16 step at most
  }
}

TEST(GroupScaleOptimizerTest, HessianWeightedGridNeverLosesToMinMaxOnItsObjective) {
  at::manual_seed(11);
  GridOptions o;
  o.bits = 2;
  o.mse = true;
  o.hessian_search = true;
  GridOptions minmax;
  minmax.bits = 2;
  int better = 0;
  for (int trial = 0; trial < 20; ++trial) {
    at::Tensor w = at::randn({64});
    at::Tensor imp = at::rand({64}).pow(4) * 10;  // uneven column importance
    const float* pw = w.data_ptr<float>();
    const float* pi = imp.data_ptr<float>();
    auto err = [&](GridParams g) {
      double e = 0;
      for (int k = 0; k < 64; ++k) {
        const double d = DequantizeCode(QuantizeToCode(pw[k], g, 3), g) - pw[k];
        e += pi[k] * d * d;
      }
      return e;
    };
    const double searched = err(FitGrid(pw, 64, o, pi));
    const double plain = err(FitGrid(pw, 64, minmax));
    EXPECT_LE(searched, plain * (1 + 1e-9));
    better += searched < plain;
  }
  EXPECT_GT(better, 10);
}

}  // namespace
}  // namespace ptq
