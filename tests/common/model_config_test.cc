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
