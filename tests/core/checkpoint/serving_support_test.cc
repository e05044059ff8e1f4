// Which runtime loads which checkpoint (docs/serving.md) on the demo model's shapes: hidden 256,
// MLP 704 (= 11 x 64, not a multiple of 128), q 256, k/v 128.
#include "core/checkpoint/serving_support.h"

#include <gtest/gtest.h>

namespace ptq {
namespace {

ModelConfig Demo() {
  ModelConfig c;
  c.hidden_size = 256;
  c.intermediate_size = 704;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 64;
  c.num_hidden_layers = 4;
  c.vocab_size = 256;
  return c;
}

QuantizeOptions Grid(int bits, bool sym, int64_t group) {
  QuantizeOptions o;
  o.gptq.grid.bits = bits;
  o.gptq.grid.sym = sym;
  o.gptq.group_size = group;
  return o;
}

bool HasWarning(const ServingSupport& s, const std::string& text) {
  for (const std::string& w : s.warnings) {
    if (w.find(text) != std::string::npos) return true;
  }
  return false;
}

TEST(ServingSupportTest, SymmetricW4IsGptqForMarlin) {
  const ServingSupport s = DescribeServing(Grid(4, true, 64), Demo());
  EXPECT_EQ(s.format, CheckpointFormat::kGptq);
  ASSERT_EQ(s.targets.size(), 2u);
  EXPECT_TRUE(s.targets[0].loads);
  EXPECT_NE(s.targets[0].kernel.find("Marlin"), std::string::npos);
  EXPECT_TRUE(s.targets[1].loads);  // transformers through GPTQModel
  // 704 / 2 = 352 inputs per rank is not a whole number of 64-column groups: only one rank.
  EXPECT_EQ(s.tensor_parallel, std::vector<int>{1});
  EXPECT_TRUE(HasWarning(s, "tensor-parallel-size 2/4/8"));
  // 704 is not a multiple of Marlin's 128-column tile: older vLLM refuses, newer pads.
  EXPECT_TRUE(HasWarning(s, "down_proj"));
}

TEST(ServingSupportTest, AsymmetricW4IsCompressedTensorsWithZeroPoints) {
  const ServingSupport s = DescribeServing(Grid(4, false, 64), Demo());
  EXPECT_EQ(s.format, CheckpointFormat::kCompressedTensors);
  EXPECT_TRUE(s.targets[0].loads);
  EXPECT_NE(s.targets[0].kernel.find("zero points"), std::string::npos);
  // Forced into GPTQ, vLLM refuses it.
  QuantizeOptions gptq = Grid(4, false, 64);
  gptq.format = "gptq";
  const ServingSupport g = DescribeServing(gptq, Demo());
  EXPECT_FALSE(g.targets[0].loads);
  EXPECT_TRUE(g.targets[1].loads);
  EXPECT_TRUE(HasWarning(g, "no vLLM kernel"));
}

TEST(ServingSupportTest, TwoAndThreeBitsGoToHummingWhenSymmetric) {
  const ServingSupport sym = DescribeServing(Grid(3, true, 64), Demo());
  EXPECT_EQ(sym.format, CheckpointFormat::kCompressedTensors);
  EXPECT_TRUE(sym.targets[0].loads);
  EXPECT_NE(sym.targets[0].kernel.find("Humming"), std::string::npos);
  EXPECT_NE(sym.targets[1].kernel.find("0.18"), std::string::npos);  // dense 3-bit packing
  const ServingSupport asym = DescribeServing(Grid(2, false, 64), Demo());
  EXPECT_FALSE(asym.targets[0].loads);
  EXPECT_TRUE(asym.targets[1].loads);
  QuantizeOptions act = Grid(3, true, 64);
  act.gptq.act_order = true;
  EXPECT_FALSE(DescribeServing(act, Demo()).targets[0].loads);
  act.gptq.static_groups = true;  // groups in column order again
  EXPECT_TRUE(DescribeServing(act, Demo()).targets[0].loads);
}

TEST(ServingSupportTest, PartialGroupsAndOddGroupSizesLoadNowhereFast) {
  QuantizeOptions partial = Grid(4, true, 128);
  partial.partial_groups = true;
  const ServingSupport p = DescribeServing(partial, Demo());
  EXPECT_EQ(p.format, CheckpointFormat::kGptq);
  EXPECT_FALSE(p.targets[0].loads);
  EXPECT_TRUE(HasWarning(p, "does not divide down_proj (704 inputs)"));
  const ServingSupport odd = DescribeServing(Grid(4, true, 16), Demo());
  EXPECT_FALSE(odd.targets[0].loads);
  EXPECT_NE(odd.targets[0].kernel.find("group sizes"), std::string::npos);
  // Per channel every split keeps whole rows: all tensor-parallel sizes whose shards divide.
  EXPECT_EQ(DescribeServing(Grid(4, true, -1), Demo()).tensor_parallel, (std::vector<int>{1, 2, 4, 8}));
}

TEST(ServingSupportTest, DequantizedIsADenseModel) {
  QuantizeOptions o = Grid(3, false, 64);
  o.format = "dequantized";
  const ServingSupport s = DescribeServing(o, Demo());
  EXPECT_EQ(s.format, CheckpointFormat::kDequantized);
  EXPECT_TRUE(s.targets[0].loads && s.targets[1].loads);
  EXPECT_TRUE(s.warnings.empty());
  const nlohmann::json j = ServingSupportJson(s);
  EXPECT_EQ(j["format"], "dequantized");
  EXPECT_EQ(j["runtimes"].size(), 2u);
}

}  // namespace
}  // namespace ptq
