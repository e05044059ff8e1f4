// The options' checkpoint record and the resolved plan: method defaults applied once, settings a
// method ignores neutral, and the grid options `--scale-init` implies.
#include "core/pipeline/quantize_options.h"

#include <gtest/gtest.h>

#include <set>
#include <string>

#include "core/pipeline/quantize_plan.h"
#include "nlohmann/json.hpp"

namespace ptq {
namespace {

ModelConfig SmallConfig() {
  ModelConfig c;
  c.hidden_size = 64;
  c.intermediate_size = 128;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 16;
  c.num_hidden_layers = 3;
  c.vocab_size = 256;
  return c;
}

QuantizeOptions Options(const std::string& method) {
  QuantizeOptions o;
  o.method = method;
  o.gptq.group_size = 64;
  return o;
}

// The keys the checkpoint's `ptq` record has always had (docs/formats.md): a renamed or lost key
// would change every checkpoint's bytes.
TEST(QuantizeOptionsTest, CheckpointRecordHasItsKeys) {
  const nlohmann::json j = CheckpointOptionsJson(Options("gptq"));
  std::set<std::string> keys;
  for (const auto& item : j.items()) keys.insert(item.key());
  EXPECT_EQ(keys, (std::set<std::string>{
                      "act_order", "act_order_rows", "bits", "damp_percent", "format", "group_size",
                      "joint_rows", "method", "mse_grid", "partial_groups", "qk_hessian",
                      "refine_iters", "requant_passes", "residual_alpha", "residual_every",
                      "samples", "scale_init",
                      "seed", "seq_len", "sequential", "static_groups", "sym", "value_block",
                      "value_damp"}));
}

TEST(QuantizeOptionsTest, CheckpointRecordResolvesMethodDefaults) {
  QuantizeOptions gptq = Options("gptq");
  gptq.act_order_rows = false;
  const nlohmann::json g = CheckpointOptionsJson(gptq);
  EXPECT_EQ(g["residual_alpha"], 0.0);
  EXPECT_EQ(g["residual_every"], 0);  // no full-precision stream at all
  EXPECT_EQ(g["value_block"], false);  // no value block outside BoA/TurboBoA
  EXPECT_EQ(g["qk_hessian"], "");
  EXPECT_EQ(g["value_damp"], -1.0);
  EXPECT_EQ(g["joint_rows"], 16);

  // Two-stage scales by default for every method with a Hessian, none for rtn.
  EXPECT_EQ(g["refine_iters"], kDefaultRefineIters);
  EXPECT_EQ(g["scale_init"], "hessian");
  const nlohmann::json r = CheckpointOptionsJson(Options("rtn"));
  EXPECT_EQ(r["refine_iters"], 0);
  EXPECT_EQ(r["scale_init"], "minmax");
  QuantizeOptions classic = Options("gptq");
  classic.act_order_rows = false;
  classic.refine_iters = 0;  // zero is "off", not "the default"
  classic.scale_init = "minmax";
  const nlohmann::json c = CheckpointOptionsJson(classic);
  EXPECT_EQ(c["refine_iters"], 0);
  EXPECT_EQ(c["scale_init"], "minmax");

  const nlohmann::json t = CheckpointOptionsJson(Options("turboboa"));
  EXPECT_EQ(t["residual_alpha"], 0.25);  // TurboBoA's default correction
  EXPECT_EQ(t["residual_every"], kDefaultResidualEvery);
  EXPECT_EQ(t["value_block"], false);    // the shared H_in by default
  EXPECT_EQ(t["value_damp"], -1.0);
  EXPECT_EQ(t["qk_hessian"], "moment");
  QuantizeOptions with_block = Options("turboboa");
  with_block.value_block = true;
  const nlohmann::json tv = CheckpointOptionsJson(with_block);
  EXPECT_EQ(tv["value_block"], true);
  EXPECT_EQ(tv["value_damp"], 0.01);  // as --damp

  QuantizeOptions boa = Options("boa");
  boa.joint_rows = 8;
  boa.value_block = false;
  const nlohmann::json b = CheckpointOptionsJson(boa);
  EXPECT_EQ(b["joint_rows"], 1);  // BoA quantizes one row at a time
  EXPECT_EQ(b["value_block"], false);
  EXPECT_EQ(b["value_damp"], -1.0);
  EXPECT_EQ(b["residual_alpha"], 0.0);
}

TEST(QuantizeOptionsTest, PlanDerivesEverySettingOnce) {
  QuantizeOptions o = Options("turboboa");
  o.scale_init = "hessian-block";
  o.value_damp = 0.05;
  o.qk_hessian = "softmax";
  o.format = "gptq";
  auto plan = ResolvePlan(o, SmallConfig());
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->method, Method::kTurboBoa);
  EXPECT_TRUE(plan->attention_aware);
  EXPECT_EQ(plan->qk_hessian, QkHessian::kSoftmax);
  EXPECT_EQ(plan->residual_alpha, 0.25);
  EXPECT_TRUE(plan->layer.gptq.grid.mse);
  EXPECT_TRUE(plan->layer.gptq.grid.hessian_search);
  EXPECT_TRUE(plan->layer.gptq.grid.hessian_block);
  EXPECT_EQ(plan->layer.gptq.grid.min_zero, 1);  // the GPTQ format stores zero - 1
  EXPECT_EQ(plan->layer.value_damp, 0.05);
  EXPECT_FALSE(plan->layer.rtn);
  EXPECT_EQ(plan->num_linears, 3 * 7);
  EXPECT_EQ(plan->options_json, CheckpointOptionsJson(o).dump());

  QuantizeOptions sym = Options("gptq");
  sym.scale_init = "minmax";
  sym.gptq.grid.sym = true;
  sym.format = "dequantized";
  auto sym_plan = ResolvePlan(sym, SmallConfig());
  ASSERT_TRUE(sym_plan.ok());
  EXPECT_EQ(sym_plan->layer.gptq.grid.min_zero, 0);
  EXPECT_FALSE(sym_plan->layer.gptq.grid.mse);
  EXPECT_EQ(sym_plan->format, CheckpointFormat::kDequantized);
  EXPECT_EQ(sym_plan->layer.refine_iters, kDefaultRefineIters);

  auto default_plan = ResolvePlan(Options("gptq"), SmallConfig());  // two-stage scales by default
  ASSERT_TRUE(default_plan.ok());
  EXPECT_TRUE(default_plan->layer.gptq.grid.hessian_search);
  EXPECT_FALSE(default_plan->layer.gptq.grid.hessian_block);
  EXPECT_EQ(default_plan->layer.refine_iters, kDefaultRefineIters);
}

// --residual-every thins the residual correction's stream: refused where there is none, and where
// it is not a count of batches; the plan gets the resolved stride.
TEST(QuantizeOptionsTest, ResidualEveryNeedsTheCorrection) {
  QuantizeOptions t = Options("turboboa");
  t.residual_every = 3;
  EXPECT_TRUE(ValidateQuantizeOptions(t, SmallConfig()).ok());
  auto plan = ResolvePlan(t, SmallConfig());
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->residual_every, 3);
  EXPECT_EQ(CheckpointOptionsJson(t)["residual_every"], 3);
  t.residual_every = -1;
  EXPECT_NE(ValidateQuantizeOptions(t, SmallConfig()).message().find("--residual-every"),
            std::string::npos);
  t.residual_every = 2;
  t.residual_alpha = 0;  // the correction switched off
  EXPECT_NE(ValidateQuantizeOptions(t, SmallConfig()).message().find("--residual-every needs"),
            std::string::npos);
  QuantizeOptions g = Options("gptq");
  g.residual_every = 2;
  EXPECT_FALSE(ValidateQuantizeOptions(g, SmallConfig()).ok());
  g.residual_alpha = 0.5;  // GPTQ with the correction asked for
  EXPECT_TRUE(ValidateQuantizeOptions(g, SmallConfig()).ok());
  EXPECT_EQ(ResolvePlan(Options("turboboa"), SmallConfig())->residual_every, kDefaultResidualEvery);
}

TEST(QuantizeOptionsTest, DeviceNames) {
  EXPECT_EQ(ParseDeviceName("cpu").value(), -1);
  EXPECT_EQ(ParseDeviceName("cuda").value(), 0);
  EXPECT_EQ(ParseDeviceName("cuda:3").value(), 3);
  for (const char* bad : {"gpu", "cuda:", "cuda:x", "cuda:-1", "cuda:1x", "CPU", "cuda:99999"}) {
    auto parsed = ParseDeviceName(bad);
    ASSERT_FALSE(parsed.ok()) << bad;
    EXPECT_NE(parsed.status().message().find("unknown --device"), std::string::npos) << bad;
  }
  QuantizeOptions o = Options("gptq");
  o.device = "tpu";
  EXPECT_EQ(ResolvePlan(o, SmallConfig()).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(QuantizeOptionsTest, ResolvingRefusesWhatValidationRefuses) {
  QuantizeOptions o = Options("awq");
  auto plan = ResolvePlan(o, SmallConfig());
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().message(), "unknown method \"awq\" (supported: rtn, gptq, boa, turboboa)");
  o = Options("gptq");
  o.format = "gguf";
  EXPECT_EQ(ResolvePlan(o, SmallConfig()).status().message(),
            "unknown format \"gguf\" (supported: auto, gptq, compressed-tensors, dequantized)");
}

// --format auto: GPTQ where vLLM's GPTQ path takes it (4/8-bit symmetric), compressed-tensors
// otherwise, GPTQ again for a shorter last group; the record holds the resolved name.
TEST(QuantizeOptionsTest, AutoFormatPicksWhatLoads) {
  struct Case {
    int bits;
    bool sym, partial;
    CheckpointFormat expected;
  };
  for (const Case& c : {Case{4, true, false, CheckpointFormat::kGptq},
                        Case{8, true, false, CheckpointFormat::kGptq},
                        Case{4, false, false, CheckpointFormat::kCompressedTensors},
                        Case{3, true, false, CheckpointFormat::kCompressedTensors},
                        Case{2, false, false, CheckpointFormat::kCompressedTensors},
                        Case{3, false, true, CheckpointFormat::kGptq}}) {
    QuantizeOptions o = Options("gptq");
    o.gptq.grid.bits = c.bits;
    o.gptq.grid.sym = c.sym;
    o.partial_groups = c.partial;
    EXPECT_EQ(o.format, "auto");
    EXPECT_EQ(ResolveCheckpointFormat(o), c.expected) << c.bits << " " << c.sym;
    auto plan = ResolvePlan(o, SmallConfig());
    ASSERT_TRUE(plan.ok()) << plan.status();
    EXPECT_EQ(plan->format, c.expected);
    EXPECT_EQ(CheckpointOptionsJson(o)["format"], std::string(CheckpointFormatName(c.expected)));
    // Only the GPTQ format's zero - 1 storage needs asymmetric zero points >= 1.
    EXPECT_EQ(plan->layer.gptq.grid.min_zero, c.expected == CheckpointFormat::kGptq && !c.sym ? 1 : 0);
  }
  QuantizeOptions a = Options("gptq");
  a.gptq.act_order = true;
  auto group_plan = ResolvePlan(a, SmallConfig());
  ASSERT_TRUE(group_plan.ok());
  EXPECT_EQ(group_plan->compressed_tensors.actorder, "group");
  a.gptq.static_groups = true;
  EXPECT_EQ(ResolvePlan(a, SmallConfig())->compressed_tensors.actorder, "weight");
}

TEST(QuantizeOptionsTest, FormatThatCannotExpressASettingIsRefusedWithTheAlternative) {
  ModelConfig c = SmallConfig();
  c.intermediate_size = 96;  // groups of 64 leave a shorter last group in down_proj
  QuantizeOptions o = Options("gptq");
  o.partial_groups = true;
  o.format = "compressed-tensors";
  absl::Status s = ValidateQuantizeOptions(o, c);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("cannot express a shorter last group"), std::string::npos) << s;
  EXPECT_NE(s.message().find("--format gptq"), std::string::npos) << s;
  o.format = "gptq";
  EXPECT_TRUE(ValidateQuantizeOptions(o, c).ok());
  // 3-bit GPTQ packs 32 values into 3 words: a layer of 100 cannot be stored, compressed-tensors pads.
  ModelConfig odd = SmallConfig();
  odd.intermediate_size = 100;
  QuantizeOptions g = Options("gptq");
  g.gptq.group_size = -1;
  g.gptq.grid.bits = 3;
  g.format = "gptq";
  s = ValidateQuantizeOptions(g, odd);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("--format compressed-tensors"), std::string::npos) << s;
  g.format = "compressed-tensors";
  EXPECT_TRUE(ValidateQuantizeOptions(g, odd).ok());
  g.max_shard_mib = 0;
  EXPECT_FALSE(ValidateQuantizeOptions(g, odd).ok());
}

}  // namespace
}  // namespace ptq
