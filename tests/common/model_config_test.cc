#include <gtest/gtest.h>

#include "common/model_config.h"
#include "tests/test_paths.h"

namespace ptq {
namespace {

TEST(ModelConfigTest, ReadsTheDemoModel) {
  auto c = LoadModelConfig(testing::DemoModelDir());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->model_type, "llama");
  EXPECT_EQ(c->hidden_size, 256);
  EXPECT_EQ(c->intermediate_size, 704);
  EXPECT_EQ(c->num_hidden_layers, 4);
  EXPECT_EQ(c->num_attention_heads, 4);
  EXPECT_EQ(c->num_key_value_heads, 2);
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_EQ(c->vocab_size, 256);
  EXPECT_DOUBLE_EQ(c->rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c->rope_theta, 10000.0);
  EXPECT_FALSE(c->tie_word_embeddings);
}

TEST(ModelConfigTest, Qwen2HasAttentionBias) {
  auto c = ParseModelConfig(R"({"model_type":"qwen2","hidden_size":64,"intermediate_size":128,
    "num_hidden_layers":1,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":10})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->attention_bias);
  EXPECT_EQ(c->NumQueriesPerKv(), 2);
}

// Which layers use the sliding window, as transformers' configs decide it (configuration_mistral:
// every layer; configuration_qwen2/qwen3: with use_sliding_window, layers >= max_window_layers, or
// layer_types when given).
TEST(ModelConfigTest, SlidingWindowLayersFollowEachFamily) {
  const std::string dims = R"("hidden_size":64,"intermediate_size":128,"num_hidden_layers":4,
    "num_attention_heads":4,"num_key_value_heads":2,"vocab_size":10)";
  auto parse = [&](const std::string& fields) {
    auto c = ParseModelConfig("{" + dims + "," + fields + "}");
    EXPECT_TRUE(c.ok()) << fields << ": " << c.status();
    std::vector<int64_t> windows;
    for (int64_t i = 0; c.ok() && i < 4; ++i) windows.push_back(c->AttentionWindow(i));
    return windows;
  };
  using W = std::vector<int64_t>;
  EXPECT_EQ(parse(R"("model_type":"mistral","sliding_window":16)"), (W{16, 16, 16, 16}));
  EXPECT_EQ(parse(R"("model_type":"mistral","sliding_window":null)"), (W{0, 0, 0, 0}));
  EXPECT_EQ(parse(R"("model_type":"llama","sliding_window":16)"), (W{0, 0, 0, 0}));
  EXPECT_EQ(parse(R"("model_type":"qwen2","sliding_window":16,"max_window_layers":2)"),
            (W{0, 0, 0, 0}));  // use_sliding_window false (the default)
  EXPECT_EQ(parse(R"("model_type":"qwen2","use_sliding_window":true,"sliding_window":16,
                     "max_window_layers":2)"), (W{0, 0, 16, 16}));
  EXPECT_EQ(parse(R"("model_type":"qwen2","use_sliding_window":true,"sliding_window":16)"),
            (W{0, 0, 0, 0}));  // max_window_layers defaults to 28
  EXPECT_EQ(parse(R"("model_type":"qwen3","use_sliding_window":true,"sliding_window":8,
                     "max_window_layers":0,"layer_types":["sliding_attention","full_attention",
                     "full_attention","sliding_attention"])"), (W{8, 0, 0, 8}));
}

TEST(ModelConfigTest, Qwen3HasQkNormsAndAnExplicitHeadDim) {
  auto c = ParseModelConfig(R"({"model_type":"qwen3","hidden_size":64,"intermediate_size":128,
    "num_hidden_layers":1,"num_attention_heads":4,"num_key_value_heads":2,"head_dim":32,
    "vocab_size":10,"attention_bias":false})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->qk_norm);
  EXPECT_FALSE(c->attention_bias);
  EXPECT_EQ(c->head_dim, 32);
}

TEST(ModelConfigTest, ReadsRopeParametersOfNewerConfigs) {
  auto c = ParseModelConfig(R"({"model_type":"llama","hidden_size":64,"intermediate_size":128,
    "num_hidden_layers":1,"num_attention_heads":4,"vocab_size":10,
    "rope_parameters":{"rope_type":"llama3","rope_theta":500000.0,"factor":8.0,
    "low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192}})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_scaling.type, "llama3");
  EXPECT_DOUBLE_EQ(c->rope_theta, 500000.0);
  EXPECT_DOUBLE_EQ(c->rope_scaling.factor, 8.0);
}

TEST(ModelConfigTest, RefusesUnimplementedFieldsByName) {
  const std::string dims = R"("model_type":"mistral","hidden_size":64,"intermediate_size":128,
    "num_hidden_layers":2,"num_attention_heads":4,"vocab_size":10)";
  for (const char* field : {R"("attn_logit_softcapping":50.0)", R"("final_logit_softcapping":30)",
                            R"("num_local_experts":8)", R"("num_experts":4)",
                            R"("n_routed_experts":4)", R"("mlp_bias":true)",
                            R"("attention_bias":true)", R"("partial_rotary_factor":0.5)",
                            R"("rope_parameters":{"rope_type":"yarn","factor":4.0})",
                            R"("rope_scaling":{"rope_type":"dynamic","factor":2.0})"}) {
    auto r = ParseModelConfig("{" + dims + "," + field + "}");
    ASSERT_FALSE(r.ok()) << field;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kUnimplemented) << field;
    // The message names the field (or the rope type).
    std::string key = std::string(field).substr(1, std::string(field).find('"', 1) - 1);
    const std::string message(r.status().message());
    EXPECT_TRUE(message.find(key) != std::string::npos || message.find("yarn") != std::string::npos ||
                message.find("dynamic") != std::string::npos)
        << field << ": " << message;
  }
  // Neutral values are fine: they change nothing.
  for (const char* field : {R"("attn_logit_softcapping":null)", R"("num_experts":0)",
                            R"("mlp_bias":false)", R"("attention_bias":false)",
                            R"("partial_rotary_factor":1.0)"}) {
    auto r = ParseModelConfig("{" + dims + "," + field + "}");
    EXPECT_TRUE(r.ok()) << field << ": " << r.status();
  }
  auto types = ParseModelConfig(R"({"model_type":"qwen3","hidden_size":64,"intermediate_size":128,
    "num_hidden_layers":2,"num_attention_heads":4,"vocab_size":10,"use_sliding_window":true,
    "sliding_window":4,"layer_types":["chunked_attention","full_attention"]})");
  ASSERT_FALSE(types.ok());
  EXPECT_NE(std::string(types.status().message()).find("layer_types"), std::string::npos);
}

TEST(ModelConfigTest, RejectsWhatTheForwardCannotRun) {
  struct Case {
    const char* json;
    const char* words;
  } cases[] = {
      {R"({"model_type":"gpt2","hidden_size":64})", "unsupported model_type"},
      {R"({"model_type":"llama","hidden_size":64,"intermediate_size":128,"num_hidden_layers":1,
          "num_attention_heads":6,"vocab_size":10})", "not divisible"},
      {R"({"model_type":"llama","hidden_size":64,"intermediate_size":128,"num_hidden_layers":1,
          "num_attention_heads":4,"num_key_value_heads":3,"vocab_size":10})", "multiple"},
      {R"({"model_type":"llama","hidden_size":64,"num_hidden_layers":1,
          "num_attention_heads":4,"vocab_size":10})", "intermediate_size"},
      {R"({"model_type":"llama","hidden_act":"gelu","hidden_size":64})", "hidden_act"},
      {R"({"model_type":"llama","hidden_size":64,"intermediate_size":128,"num_hidden_layers":1,
          "num_attention_heads":4,"vocab_size":10,"rope_scaling":{"type":"yarn","factor":2}})",
       "rope_scaling"},
      {"[1,2]", "not a JSON object"},
  };
  for (const auto& c : cases) {
    auto r = ParseModelConfig(c.json);
    ASSERT_FALSE(r.ok()) << c.json;
    EXPECT_NE(std::string(r.status().message()).find(c.words), std::string::npos) << r.status();
  }
  auto missing = LoadModelConfig("/nonexistent/model");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(std::string(missing.status().message()).find("config.json"), std::string::npos);
}

}  // namespace
}  // namespace ptq
