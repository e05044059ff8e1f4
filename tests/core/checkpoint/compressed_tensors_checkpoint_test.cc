// The compressed-tensors pack-quantized writer and reader: bit-exact round trips for every bit width,
// symmetry, act-order kind and group layout; the tensors and quantization_config compressed-tensors
// expects; sharding; refusals and bad checkpoints. (The packing itself is checked against
// compressed-tensors' pack_to_int32 in tests/common/pack_quantized_format_test.cc, and whole `ptq`
// checkpoints against the consumers' unpacking in serving_formats_test.py.)
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "common/model_files.h"
#include "common/safetensors_writer.h"
#include "core/checkpoint/compressed_tensors_weight_source.h"
#include "core/checkpoint/compressed_tensors_writer.h"
#include "core/quant/gptq_quantizer.h"
#include "nlohmann/json.hpp"

namespace ptq {
namespace {
namespace fs = std::filesystem;

std::string FreshDir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("ptq_ct_ckpt_test_" + name);
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

QuantizedLinear RandomQuantized(int64_t out, int64_t in, int bits, int64_t group, bool sym,
                                bool act_order, bool static_groups, uint64_t seed) {
  at::manual_seed(seed);
  at::Tensor w = at::randn({out, in});
  at::Tensor x = at::randn({4 * in, in}) * at::linspace(0.2, 2.0, in);
  GptqOptions o;
  o.grid.bits = bits;
  o.grid.sym = sym;
  o.group_size = group;
  o.act_order = act_order;
  o.static_groups = static_groups;
  auto q = GptqQuantize(w, at::matmul(x.t(), x).to(at::kDouble), o);
  EXPECT_TRUE(q.ok());
  return *q;
}

CompressedTensorsOptions WriterOptions(const std::string& dir, int bits, int64_t group, bool sym,
                                       std::string actorder = "") {
  CompressedTensorsOptions o;
  o.dir = dir;
  o.source_dir = dir;
  o.config_json = R"({"model_type":"llama"})";
  o.bits = bits;
  o.group_size = group;
  o.sym = sym;
  o.actorder = std::move(actorder);
  return o;
}

CompressedTensorsWeightSource Source(const std::string& dir) {
  auto files = ModelFiles::Open(dir);
  EXPECT_TRUE(files.ok()) << files.status();
  auto config = nlohmann::json::parse(std::ifstream(dir + "/config.json"));
  auto c = ParseCompressedTensorsConfig(config["quantization_config"].dump());
  EXPECT_TRUE(c.ok()) << c.status();
  return CompressedTensorsWeightSource(std::shared_ptr<const ModelFiles>(std::move(*files)), *c);
}

TEST(CompressedTensorsCheckpointTest, WriteThenReadIsBitExactForEveryLayout) {
  int seed = 0;
  for (int bits : {2, 3, 4, 8}) {
    for (bool sym : {false, true}) {
      for (const char* actorder : {"", "group", "weight"}) {
        for (int64_t group : {int64_t{32}, int64_t{-1}}) {
          if (std::string(actorder) == "group" && group < 0) continue;  // "weight" per channel
          const bool act_order = actorder[0] != '\0';
          // 40 outputs: the zero points' packed rows end in a partly filled word at every width.
          QuantizedLinear q = RandomQuantized(40, 96, bits, group, sym, act_order,
                                              std::string(actorder) == "weight", ++seed);
          const std::string dir = FreshDir("layout");
          CompressedTensorsWriter writer(WriterOptions(dir, bits, group, sym, actorder));
          ASSERT_TRUE(writer.AddQuantized("layer.weight", q).ok());
          ASSERT_TRUE(writer.Finish().ok());
          CompressedTensorsWeightSource source = Source(dir);
          ASSERT_TRUE(source.Has("layer.weight"));
          auto w = source.LoadFloat("layer.weight");
          ASSERT_TRUE(w.ok()) << w.status();
          EXPECT_TRUE(at::equal(*w, q.weight)) << "bits " << bits << " sym " << sym << " actorder "
                                               << actorder << " group " << group;
        }
      }
    }
  }
}

TEST(CompressedTensorsCheckpointTest, TensorsAndConfigAreWhatCompressedTensorsExpects) {
  QuantizedLinear q = RandomQuantized(40, 96, 3, 32, false, true, false, 1);
  const std::string dir = FreshDir("names");
  CompressedTensorsOptions o = WriterOptions(dir, 3, 32, false, "group");
  o.ptq_json = R"({"method":"gptq"})";
  CompressedTensorsWriter writer(o);
  ASSERT_TRUE(writer.AddQuantized("model.layers.0.mlp.up_proj.weight", q).ok());
  ASSERT_TRUE(writer.Finish().ok());
  auto files = ModelFiles::Open(dir);
  ASSERT_TRUE(files.ok());
  const std::string p = "model.layers.0.mlp.up_proj.";
  auto expect = [&](const std::string& name, DType dtype, std::vector<int64_t> shape) {
    auto v = (*files)->Get(p + name);
    ASSERT_TRUE(v.ok()) << name;
    EXPECT_EQ(v->dtype, dtype) << name;
    EXPECT_EQ(v->shape, shape) << name;
  };
  expect("weight_packed", DType::kI32, {40, 9});       // 96 * 3 / 32
  expect("weight_scale", DType::kF16, {40, 3});
  expect("weight_zero_point", DType::kI32, {4, 3});    // ceil(40 * 3 / 32)
  expect("weight_shape", DType::kI64, {2});
  expect("weight_g_idx", DType::kI32, {96});
  EXPECT_FALSE((*files)->Has(p + "weight"));
  auto config = nlohmann::json::parse(std::ifstream(dir + "/config.json"));
  const auto& qc = config["quantization_config"];
  EXPECT_EQ(qc["quant_method"], "compressed-tensors");
  EXPECT_EQ(qc["format"], "pack-quantized");
  EXPECT_EQ(qc["quantization_status"], "compressed");
  EXPECT_EQ(qc["ignore"], nlohmann::json({"lm_head"}));
  EXPECT_EQ(qc["ptq"]["method"], "gptq");
  const auto& group = qc["config_groups"]["group_0"];
  EXPECT_EQ(group["targets"], nlohmann::json({"Linear"}));
  EXPECT_EQ(group["format"], "pack-quantized");
  EXPECT_TRUE(group["input_activations"].is_null());
  const auto& w = group["weights"];
  EXPECT_EQ(w["num_bits"], 3);
  EXPECT_EQ(w["type"], "int");
  EXPECT_EQ(w["symmetric"], false);
  EXPECT_EQ(w["strategy"], "group");
  EXPECT_EQ(w["group_size"], 32);
  EXPECT_EQ(w["actorder"], "group");
  // Symmetric and per channel: no zero point, channel strategy, scales [out, 1].
  QuantizedLinear s = RandomQuantized(40, 96, 4, -1, true, false, false, 2);
  const std::string dir2 = FreshDir("channel");
  CompressedTensorsWriter writer2(WriterOptions(dir2, 4, -1, true));
  ASSERT_TRUE(writer2.AddQuantized("layer.weight", s).ok());
  ASSERT_TRUE(writer2.Finish().ok());
  auto files2 = ModelFiles::Open(dir2);
  ASSERT_TRUE(files2.ok());
  EXPECT_FALSE((*files2)->Has("layer.weight_zero_point"));
  EXPECT_FALSE((*files2)->Has("layer.weight_g_idx"));
  EXPECT_EQ((*files2)->Get("layer.weight_scale")->shape, (std::vector<int64_t>{40, 1}));
  auto config2 = nlohmann::json::parse(std::ifstream(dir2 + "/config.json"));
  EXPECT_EQ(config2["quantization_config"]["config_groups"]["group_0"]["weights"]["strategy"], "channel");
  EXPECT_TRUE(config2["quantization_config"]["config_groups"]["group_0"]["weights"]["actorder"].is_null());
}

TEST(CompressedTensorsCheckpointTest, LargeOutputIsShardedWithAnIndex) {
  const std::string dir = FreshDir("shards");
  CompressedTensorsOptions o = WriterOptions(dir, 4, 32, false);
  o.max_shard_bytes = 1500;
  CompressedTensorsWriter writer(o);
  std::vector<QuantizedLinear> layers;
  for (int i = 0; i < 3; ++i) {
    layers.push_back(RandomQuantized(32, 64, 4, 32, false, false, false, 10 + i));
    ASSERT_TRUE(writer.AddQuantized("layer" + std::to_string(i) + ".weight", layers.back()).ok());
  }
  ASSERT_TRUE(writer.Finish().ok());
  EXPECT_TRUE(fs::exists(dir + "/model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(dir + "/model.safetensors"));
  CompressedTensorsWeightSource source = Source(dir);
  for (int i = 0; i < 3; ++i) {
    auto w = source.LoadFloat("layer" + std::to_string(i) + ".weight");
    ASSERT_TRUE(w.ok()) << w.status();
    EXPECT_TRUE(at::equal(*w, layers[i].weight));
  }
}

TEST(CompressedTensorsCheckpointTest, RefusesWhatTheFormatCannotHold) {
  // A shorter last group (96 inputs, groups of 64): compressed-tensors reshapes rows into whole groups.
  QuantizedLinear partial = RandomQuantized(32, 96, 4, 64, false, false, false, 3);
  CompressedTensorsWriter writer(WriterOptions(FreshDir("partial"), 4, 64, false));
  auto s = writer.AddQuantized("layer.weight", partial);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(std::string(s.message()).find("shorter last group"), std::string::npos) << s;
  // A symmetric checkpoint stores no zero point, so every group's must be 2^(b-1).
  QuantizedLinear q = RandomQuantized(32, 64, 4, 32, true, false, false, 4);
  q.zeros[1][1] = 5;
  CompressedTensorsWriter sym(WriterOptions(FreshDir("sym_bad"), 4, 32, true));
  s = sym.AddQuantized("layer.weight", q);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(std::string(s.message()).find("symmetric"), std::string::npos) << s;
}

TEST(CompressedTensorsCheckpointTest, BadConfigsAndCheckpointsNameTheProblem) {
  const std::string good =
      R"({"quant_method":"compressed-tensors","format":"pack-quantized","config_groups":{"g":{"targets":["Linear"],"weights":{"num_bits":4,"type":"int","symmetric":true,"strategy":"group","group_size":128}}}})";
  auto c = ParseCompressedTensorsConfig(good);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->bits, 4);
  EXPECT_EQ(c->group_size, 128);
  EXPECT_TRUE(c->sym);
  for (const char* bad :
       {"true", "{", R"({"quant_method":"compressed-tensors","format":"float-quantized"})",
        R"({"quant_method":"compressed-tensors","format":"pack-quantized","config_groups":{}})",
        R"({"quant_method":"compressed-tensors","format":"pack-quantized","config_groups":{"g":{"weights":{"num_bits":4,"type":"float","strategy":"group","group_size":128}}}})",
        R"({"quant_method":"compressed-tensors","format":"pack-quantized","config_groups":{"g":{"weights":{"num_bits":12,"type":"int","strategy":"group","group_size":128}}}})",
        R"({"quant_method":"compressed-tensors","format":"pack-quantized","config_groups":{"g":{"weights":{"num_bits":4,"type":"int","strategy":"block","block_structure":[128,128]}}}})",
        R"({"quant_method":"compressed-tensors","format":"pack-quantized","config_groups":{"g":{"weights":{"num_bits":4,"type":"int","strategy":"group","group_size":0}}}})",
        R"({"quant_method":"compressed-tensors","format":"pack-quantized","config_groups":{"g":{"weights":{"num_bits":4,"type":"int","strategy":"group","group_size":128},"input_activations":{"num_bits":8}}}})"}) {
    EXPECT_FALSE(ParseCompressedTensorsConfig(bad).ok()) << bad;
  }
  // A checkpoint whose zero points are missing.
  QuantizedLinear q = RandomQuantized(32, 64, 4, 32, false, false, false, 5);
  const std::string dir = FreshDir("bad");
  CompressedTensorsWriter writer(WriterOptions(dir, 4, 32, false));
  ASSERT_TRUE(writer.AddQuantized("layer.weight", q).ok());
  ASSERT_TRUE(writer.Finish().ok());
  auto files = ModelFiles::Open(dir);
  ASSERT_TRUE(files.ok());
  SafetensorsWriter partial;
  for (const char* name : {"layer.weight_packed", "layer.weight_scale", "layer.weight_shape"}) {
    auto v = (*files)->Get(name);
    ASSERT_TRUE(v.ok());
    ASSERT_TRUE(partial.AddTensor(name, v->dtype, v->shape,
                                  std::vector<uint8_t>(v->data, v->data + v->num_bytes)).ok());
  }
  const std::string dir2 = FreshDir("missing");
  ASSERT_TRUE(partial.Finish(dir2 + "/model.safetensors").ok());
  auto files2 = ModelFiles::Open(dir2);
  ASSERT_TRUE(files2.ok());
  auto missing = CompressedTensorsWeightSource(std::shared_ptr<const ModelFiles>(std::move(*files2)),
                                               {4, 32, false})
                     .LoadFloat("layer.weight");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(std::string(missing.status().message()).find("weight_zero_point"), std::string::npos);
  // Read with the wrong bit width: the packed shape disagrees.
  auto wrong = CompressedTensorsWeightSource(std::shared_ptr<const ModelFiles>(std::move(*files)), {8, 32, false})
                   .LoadFloat("layer.weight");
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(std::string(wrong.status().message()).find("weight_packed"), std::string::npos);
}

}  // namespace
}  // namespace ptq
