// The GPTQ checkpoint writer and reader: bit-exact round trips for every bit width and layout, the
// zero - 1 convention, sharding, bad checkpoints, and `ptq quantize` output that reproduces itself.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "common/model_files.h"
#include "common/tokenizer.h"
#include "nlohmann/json.hpp"
#include "tests/test_paths.h"
#include "core/checkpoint/gptq_checkpoint_writer.h"
#include "core/quant/gptq_quantizer.h"
#include "core/checkpoint/gptq_weight_source.h"
#include "core/model/llama_model.h"
#include "core/model/perplexity.h"
#include "core/pipeline/quantize_pipeline.h"

namespace ptq {
namespace {
namespace fs = std::filesystem;

std::string FreshDir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("ptq_gptq_ckpt_test_" + name);
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

QuantizedLinear RandomQuantized(int64_t out, int64_t in, int bits, int64_t group, bool sym,
                                bool act_order, uint64_t seed) {
  at::manual_seed(seed);
  at::Tensor w = at::randn({out, in});
  at::Tensor x = at::randn({4 * in, in});
  GptqOptions o;
  o.grid.bits = bits;
  o.grid.sym = sym;
  o.grid.min_zero = sym ? 0 : 1;
  o.group_size = group;
  o.act_order = act_order;
  auto q = GptqQuantize(w, at::matmul(x.t(), x).to(at::kDouble), o);
  EXPECT_TRUE(q.ok());
  return *q;
}

GptqCheckpointOptions WriterOptions(const std::string& dir, int bits, int64_t group, bool sym) {
  GptqCheckpointOptions o;
  o.dir = dir;
  o.source_dir = dir;
  o.config_json = R"({"model_type":"llama"})";
  o.bits = bits;
  o.group_size = group;
  o.sym = sym;
  return o;
}

at::Tensor ReadBack(const std::string& dir, const std::string& name, const GptqConfig& c) {
  auto files = ModelFiles::Open(dir);
  EXPECT_TRUE(files.ok()) << files.status();
  GptqWeightSource source(std::shared_ptr<const ModelFiles>(std::move(*files)), c);
  EXPECT_TRUE(source.Has(name));
  auto w = source.LoadFloat(name);
  EXPECT_TRUE(w.ok()) << w.status();
  return w.ok() ? *w : at::Tensor();
}

TEST(GptqCheckpointTest, WriteThenReadIsBitExactForEveryLayout) {
  int seed = 0;
  for (int bits : {2, 3, 4, 8}) {
    for (bool sym : {false, true}) {
      for (bool act_order : {false, true}) {
        // 64 does not divide 96: a shorter last group (--partial-groups), ceil(96/64) = 2 groups.
        for (int64_t group : {int64_t{32}, int64_t{64}, int64_t{-1}}) {
          for (bool v2 : {false, true}) {
            QuantizedLinear q = RandomQuantized(64, 96, bits, group, sym, act_order, ++seed);
            const std::string dir = FreshDir("layout");
            GptqCheckpointOptions o = WriterOptions(dir, bits, group, sym);
            o.v2 = v2;
            GptqCheckpointWriter writer(o);
            ASSERT_TRUE(writer.AddQuantized("layer.weight", q).ok());
            ASSERT_TRUE(writer.Finish().ok());
            GptqConfig c{bits, group, v2};
            at::Tensor w = ReadBack(dir, "layer.weight", c);
            ASSERT_TRUE(w.defined());
            EXPECT_TRUE(at::equal(w, q.weight))
                << "bits " << bits << " sym " << sym << " act_order " << act_order << " group "
                << group << " v2 " << v2;
          }
        }
      }
    }
  }
}

TEST(GptqCheckpointTest, ClassicFormatCannotStoreZeroPointZeroButV2Can) {
  QuantizedLinear q = RandomQuantized(32, 64, 4, 32, false, false, 3);
  q.zeros[0][0] = 0;
  q.weight = DequantizeLinear(q);
  {
    GptqCheckpointWriter writer(WriterOptions(FreshDir("zero_classic"), 4, 32, false));
    auto s = writer.AddQuantized("layer.weight", q);
    ASSERT_FALSE(s.ok());
    EXPECT_NE(std::string(s.message()).find("zero point of 0"), std::string::npos);
  }
  const std::string dir = FreshDir("zero_v2");
  GptqCheckpointOptions o = WriterOptions(dir, 4, 32, false);
  o.v2 = true;
  GptqCheckpointWriter writer(o);
  ASSERT_TRUE(writer.AddQuantized("layer.weight", q).ok());
  ASSERT_TRUE(writer.Finish().ok());
  EXPECT_TRUE(at::equal(ReadBack(dir, "layer.weight", {4, 32, true}), q.weight));
  // A grid with min_zero = 1 never produces the unstorable zero, even for all-positive groups.
  GridOptions g;
  g.min_zero = 1;
  std::vector<float> positive = {0.1f, 0.4f, 0.9f};
  EXPECT_EQ(FitGrid(positive.data(), 3, g).zero, 1.0f);
}

TEST(GptqCheckpointTest, SymmetricQzerosHoldTheConstantWord) {
  QuantizedLinear q = RandomQuantized(32, 64, 4, 32, true, false, 4);
  const std::string dir = FreshDir("sym");
  GptqCheckpointWriter writer(WriterOptions(dir, 4, 32, true));
  ASSERT_TRUE(writer.AddQuantized("layer.weight", q).ok());
  ASSERT_TRUE(writer.Finish().ok());
  auto files = ModelFiles::Open(dir);
  ASSERT_TRUE(files.ok());
  auto qzeros = (*files)->Get("layer.qzeros");
  ASSERT_TRUE(qzeros.ok());
  const uint32_t* words = reinterpret_cast<const uint32_t*>(qzeros->data);
  for (size_t i = 0; i < qzeros->num_bytes / 4; ++i) EXPECT_EQ(words[i], 0x77777777u);
  auto config = nlohmann::json::parse(std::ifstream(dir + "/config.json"));
  EXPECT_EQ(config["quantization_config"]["quant_method"], "gptq");
  EXPECT_EQ(config["quantization_config"]["sym"], true);
  EXPECT_TRUE(fs::exists(dir + "/quantize_config.json"));
}

TEST(GptqCheckpointTest, ActOrderWithStaticGroupsKeepsColumnOrderGroups) {
  // desc_act + static_groups: the grids are fixed per original column group, so g_idx must be the
  // plain k / G that every loader (and the fast kernels, which ignore g_idx) assumes.
  at::manual_seed(7);
  at::Tensor w = at::randn({16, 64});
  at::Tensor x = at::randn({256, 64}) * at::linspace(0.1, 3.0, 64);
  GptqOptions o;
  o.grid.bits = 4;
  o.grid.min_zero = 1;
  o.group_size = 16;
  o.act_order = true;
  o.static_groups = true;
  auto q = GptqQuantize(w, at::matmul(x.t(), x).to(at::kDouble), o);
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_TRUE(at::equal(q->g_idx.to(at::kLong), at::arange(64, at::kLong).div(16, "floor")));
  const std::string dir = FreshDir("static_groups");
  GptqCheckpointWriter writer(WriterOptions(dir, 4, 16, false));
  ASSERT_TRUE(writer.AddQuantized("layer.weight", *q).ok());
  ASSERT_TRUE(writer.Finish().ok());
  EXPECT_TRUE(at::equal(ReadBack(dir, "layer.weight", {4, 16, false}), q->weight));
}

TEST(GptqCheckpointTest, SymmetricCheckpointRefusesAnotherZeroPoint) {
  QuantizedLinear q = RandomQuantized(32, 64, 4, 32, true, false, 6);
  q.zeros[3][1] = 7;  // not 2^(4-1): kernels that assume 8 would decode this group wrongly
  GptqCheckpointWriter writer(WriterOptions(FreshDir("sym_bad"), 4, 32, true));
  auto s = writer.AddQuantized("layer.weight", q);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(std::string(s.message()).find("symmetric"), std::string::npos) << s;
}

TEST(GptqCheckpointTest, LargeOutputIsShardedWithAnIndex) {
  const std::string dir = FreshDir("shards");
  GptqCheckpointOptions o = WriterOptions(dir, 4, 32, false);
  o.max_shard_bytes = 1500;  // each layer below is 1,440 bytes packed: one shard per layer
  GptqCheckpointWriter writer(o);
  std::vector<QuantizedLinear> layers;
  for (int i = 0; i < 3; ++i) {
    layers.push_back(RandomQuantized(32, 64, 4, 32, false, false, 10 + i));
    ASSERT_TRUE(writer.AddQuantized("layer" + std::to_string(i) + ".weight", layers.back()).ok());
  }
  ASSERT_TRUE(writer.Finish().ok());
  EXPECT_TRUE(fs::exists(dir + "/model.safetensors.index.json"));
  EXPECT_TRUE(fs::exists(dir + "/model-00001-of-00003.safetensors"));
  EXPECT_FALSE(fs::exists(dir + "/model.safetensors"));
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(at::equal(ReadBack(dir, "layer" + std::to_string(i) + ".weight", {4, 32, false}),
                          layers[i].weight));
  }
}

TEST(GptqCheckpointTest, BadCheckpointsNameTheProblem) {
  QuantizedLinear q = RandomQuantized(32, 64, 4, 32, false, false, 5);
  const std::string dir = FreshDir("bad");
  GptqCheckpointWriter writer(WriterOptions(dir, 4, 32, false));
  ASSERT_TRUE(writer.AddQuantized("layer.weight", q).ok());
  ASSERT_TRUE(writer.Finish().ok());
  auto files = ModelFiles::Open(dir);
  ASSERT_TRUE(files.ok());
  std::shared_ptr<const ModelFiles> shared(std::move(*files));
  // Read as 8-bit: the tensors disagree with each other.
  auto wrong_bits = GptqWeightSource(shared, {8, 32, false}).LoadFloat("layer.weight");
  ASSERT_FALSE(wrong_bits.ok());
  EXPECT_NE(std::string(wrong_bits.status().message()).find("layer"), std::string::npos);
  auto unknown = ParseGptqConfig(R"({"quant_method":"awq","bits":4})");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(std::string(unknown.status().message()).find("awq"), std::string::npos);
  EXPECT_FALSE(ParseGptqConfig(R"({"quant_method":"gptq","bits":5})").ok());
  // Wrong JSON types are errors, not exceptions (found by tests/fuzz/checkpoint_reader_fuzz.cc:
  // "quantization_config": true aborted `ptq eval`), and bits must not wrap around to a valid value.
  for (const char* bad : {"true", "[]", "\"gptq\"", R"({"quant_method":5,"bits":4})",
                          R"({"quant_method":"gptq","bits":"4"})", R"({"quant_method":"gptq","bits":4294967300})",
                          R"({"quant_method":"gptq","bits":4,"group_size":"128"})",
                          R"({"quant_method":"gptq","bits":4,"group_size":0})",
                          R"({"quant_method":"gptq","bits":4,"checkpoint_format":1})", "{"}) {
    EXPECT_FALSE(ParseGptqConfig(bad).ok()) << bad;
  }
  auto per_channel = ParseGptqConfig(R"({"quant_method":"gptq","bits":3,"checkpoint_format":"gptq_v2"})");
  ASSERT_TRUE(per_channel.ok());
  EXPECT_EQ(per_channel->bits, 3);
  EXPECT_EQ(per_channel->group_size, -1);
  EXPECT_TRUE(per_channel->v2);
  // A checkpoint without qzeros.
  const std::string dir2 = FreshDir("missing");
  SafetensorsWriter partial;
  auto qweight = shared->Get("layer.qweight");
  ASSERT_TRUE(qweight.ok());
  ASSERT_TRUE(partial.AddTensor("layer.qweight", qweight->dtype, qweight->shape,
                                std::vector<uint8_t>(qweight->data, qweight->data + qweight->num_bytes)).ok());
  ASSERT_TRUE(partial.Finish(dir2 + "/model.safetensors").ok());
  auto files2 = ModelFiles::Open(dir2);
  ASSERT_TRUE(files2.ok());
  auto missing = GptqWeightSource(std::shared_ptr<const ModelFiles>(std::move(*files2)), {4, 32, false})
                     .LoadFloat("layer.weight");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(std::string(missing.status().message()).find("layer.qzeros"), std::string::npos);
}

TEST(GptqCheckpointTest, QuantizedModelEvaluatesIdenticallyFromTheCheckpoint) {
  // The grid rounds scales to float16 when fitting, so the float16 scales the checkpoint stores are
  // exact and the packed model must reproduce the in-memory one bit for bit: zero tolerance.
  double ppl[2];
  int i = 0;
  std::string gptq_dir;
  for (const char* format : {"gptq", "dequantized"}) {
    QuantizeOptions o;
    o.model_dir = testing::DemoModelDir();
    o.calib_path = testing::DemoCalibText();
    o.out_dir = FreshDir(std::string("pipeline_") + format);
    o.force = true;
    o.format = format;
    o.samples = 8;
    o.seq_len = 128;
    o.gptq.grid.bits = 3;
    o.gptq.group_size = 64;
    o.gptq.act_order = true;
    o.eval_path = testing::DemoValidText();
    o.eval_max_windows = 16;
    o.eval_fp = false;
    auto r = RunQuantize(o);
    ASSERT_TRUE(r.ok()) << r.status();
    ppl[i++] = r->perplexity_quant;
    if (o.format == "gptq") gptq_dir = r->out_dir;
  }
  EXPECT_EQ(ppl[0], ppl[1]);
  EXPECT_TRUE(fs::exists(gptq_dir + "/quantize_config.json"));
  auto model = LlamaModel::Open(gptq_dir);
  ASSERT_TRUE(model.ok()) << model.status();
  auto w = (*model)->Block(0);
  ASSERT_TRUE(w.ok()) << w.status();
  // config.json now claims 8 bits for the 3-bit tensors: the error names the disagreeing layer.
  auto config = nlohmann::json::parse(std::ifstream(gptq_dir + "/config.json"));
  config["quantization_config"]["bits"] = 8;
  std::ofstream(gptq_dir + "/config.json") << config.dump();
  auto wrong = LlamaModel::Open(gptq_dir);
  ASSERT_TRUE(wrong.ok()) << wrong.status();
  auto bad = (*wrong)->Block(0);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.status().message()).find("model.layers.0."), std::string::npos)
      << bad.status();
}

}  // namespace
}  // namespace ptq
