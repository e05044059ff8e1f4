// The forward against Hugging Face transformers: the demo model folder's reference-logits.json holds
// the logits transformers computes for the first 64 bytes of valid.txt (bf16 weights upcast to fp32).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "common/model_config.h"
#include "common/tokenizer.h"
#include "nlohmann/json.hpp"
#include "tests/test_paths.h"
#include "core/model/llama_block.h"
#include "core/model/llama_model.h"
#include "core/model/perplexity.h"
#include "core/model/rope.h"

namespace ptq {
namespace {

TEST(LlamaModelTest, LogitsMatchHuggingFaceReference) {
  auto text = ReadFileToString(testing::DemoModelDir() + "/reference-logits.json");
  ASSERT_TRUE(text.ok());
  auto ref = nlohmann::json::parse(*text);
  std::vector<int64_t> ids = ref["input_bytes"].get<std::vector<int64_t>>();
  auto model = LlamaModel::Open(testing::DemoModelDir());
  ASSERT_TRUE(model.ok()) << model.status();
  const ModelConfig& c = (*model)->config();
  at::Tensor input = at::tensor(ids, at::kLong).unsqueeze(0);
  auto hidden = (*model)->Embed(input);
  ASSERT_TRUE(hidden.ok());
  at::Tensor h = *hidden;
  RopeTable rope = BuildRopeTable(c, static_cast<int64_t>(ids.size()));
  for (int64_t layer = 0; layer < c.num_hidden_layers; ++layer) {
    auto w = (*model)->Block(layer);
    ASSERT_TRUE(w.ok()) << w.status();
    h = BlockForward(h, *w, c, rope);
  }
  auto logits = (*model)->Logits(h);
  ASSERT_TRUE(logits.ok());
  at::Tensor ours = logits->squeeze(0);
  at::Tensor expected = at::empty_like(ours);
  for (size_t t = 0; t < ids.size(); ++t) {
    std::vector<float> row = ref["logits"][t].get<std::vector<float>>();
    ASSERT_EQ(static_cast<int64_t>(row.size()), c.vocab_size);
    expected[t].copy_(at::tensor(row));
  }
  const double max_diff = (ours - expected).abs().max().item<double>();
  // transformers itself agrees with this reference to 2e-5; float32 summation order differs a little.
  EXPECT_LT(max_diff, 1e-4) << "max |logit difference| " << max_diff;
}

TEST(LlamaModelTest, DemoPerplexityOnValidMatchesIndependentImplementation) {
  auto model = LlamaModel::Open(testing::DemoModelDir());
  ASSERT_TRUE(model.ok());
  auto tokenizer = TokenizerForModel(testing::DemoModelDir(), 256);
  ASSERT_TRUE(tokenizer.ok());
  auto tokens = LoadTokens(testing::DemoValidText(), **tokenizer, 256);
  ASSERT_TRUE(tokens.ok());
  ASSERT_EQ(tokens->size(), 262144u);
  PerplexityOptions po;
  po.seq_len = 256;
  auto r = EvaluatePerplexity(**model, *tokens, po);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->windows, 1024);
  // Independent plain implementation and transformers: 5.053 on these 1,024 windows of 256.
  EXPECT_NEAR(r->perplexity, 5.053, 0.002);
}

TEST(LlamaModelTest, EvaluationTextShorterThanOneWindowIsAnError) {
  auto model = LlamaModel::Open(testing::DemoModelDir());
  ASSERT_TRUE(model.ok());
  PerplexityOptions po;
  po.seq_len = 256;
  auto r = EvaluatePerplexity(**model, std::vector<int32_t>(100, 65), po);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string(r.status().message()).find("fewer than one window"), std::string::npos);
}

TEST(LlamaModelTest, MissingModelFolderIsNamed) {
  auto model = LlamaModel::Open("/nonexistent/model-dir");
  ASSERT_FALSE(model.ok());
  EXPECT_NE(std::string(model.status().message()).find("/nonexistent/model-dir"),
            std::string::npos);
}

}  // namespace
}  // namespace ptq
