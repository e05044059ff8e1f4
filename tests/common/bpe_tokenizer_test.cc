// tokenizer.json byte-level BPE against Hugging Face's tokenizers: tests/common/tokenizer_json/
// holds three small tokenizer.json files in GPT-2, Llama 3 and Qwen2 layouts, texts (contractions,
// digits, CJK, emoji, composed/decomposed accents, odd whitespace, special tokens inline, a page of
// the demo text) and the ids the Rust library gives for each (expected_ids.js, npm tokenizers
// 0.23.2). Our encoder must give the same ids for every case.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>

#include "common/bpe_tokenizer.h"
#include "common/model_config.h"
#include "nlohmann/json.hpp"
#include "tests/test_paths.h"

namespace ptq {
namespace {

std::string FixtureDir() { return testing::SourceDir() + "/tests/common/tokenizer_json"; }

nlohmann::json ReadJson(const std::string& path) {
  auto text = ReadFileToString(path);
  EXPECT_TRUE(text.ok()) << text.status();
  return nlohmann::json::parse(text.ok() ? *text : "null");
}

// A build without ICU refuses every tokenizer.json, saying so; the tests then skip.
bool HaveIcu() {
  auto probe = LoadByteLevelBpeTokenizer(FixtureDir() + "/llama3.tokenizer.json");
  return probe.ok() || std::string(probe.status().message()).find("ICU") == std::string::npos;
}
#define SKIP_WITHOUT_ICU() \
  if (!HaveIcu()) GTEST_SKIP() << "built without ICU (libicu-dev): tokenizer.json is refused"

TEST(BpeTokenizerTest, GivesTheReferenceIdsForEveryFixture) {
  SKIP_WITHOUT_ICU();
  const nlohmann::json texts = ReadJson(FixtureDir() + "/texts.json");
  const nlohmann::json expected = ReadJson(FixtureDir() + "/expected.json");
  ASSERT_GE(expected["cases"].size(), 3 * texts.size());
  std::map<std::string, std::unique_ptr<Tokenizer>> tokenizers;
  int64_t compared = 0;
  for (const auto& c : expected["cases"]) {
    const std::string file = c["tokenizer"];
    if (tokenizers.count(file) == 0) {
      auto t = LoadByteLevelBpeTokenizer(FixtureDir() + "/" + file);
      ASSERT_TRUE(t.ok()) << t.status();
      tokenizers[file] = std::move(*t);
    }
    const std::string text = texts[c["text"].get<int>()];
    auto ids = tokenizers[file]->Encode(text);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, c["ids"].get<std::vector<int32_t>>())
        << file << ", text " << c["text"] << ": " << text.substr(0, 80);
    compared += static_cast<int64_t>(ids->size());
  }
  EXPECT_GT(compared, 3000);
}

TEST(BpeTokenizerTest, ModelFolderWithTokenizerJsonUsesIt) {
  SKIP_WITHOUT_ICU();
  const std::string dir = ::testing::TempDir() + "/bpe_model_folder";
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(FixtureDir() + "/llama3.tokenizer.json", dir + "/tokenizer.json",
                             std::filesystem::copy_options::overwrite_existing);
  auto t = TokenizerForModel(dir, 1000);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_NE((*t)->Name().find("tokenizer.json"), std::string::npos);
  auto direct = LoadByteLevelBpeTokenizer(FixtureDir() + "/llama3.tokenizer.json");
  ASSERT_TRUE(direct.ok());
  EXPECT_EQ(*(*t)->Encode("The kernel's docs"), *(*direct)->Encode("The kernel's docs"));
}

TEST(BpeTokenizerTest, RefusesWhatItDoesNotImplementByName) {
  SKIP_WITHOUT_ICU();
  const nlohmann::json base = ReadJson(FixtureDir() + "/llama3.tokenizer.json");
  struct Case {
    std::function<void(nlohmann::json&)> change;
    const char* words;
  } cases[] = {
      {[](nlohmann::json& j) { j["model"]["type"] = "WordPiece"; }, "WordPiece"},
      {[](nlohmann::json& j) { j["model"]["type"] = "Unigram"; }, "Unigram"},
      {[](nlohmann::json& j) { j["model"]["byte_fallback"] = true; }, "byte_fallback"},
      {[](nlohmann::json& j) { j["model"]["dropout"] = 0.1; }, "dropout"},
      {[](nlohmann::json& j) { j["normalizer"] = {{"type", "Lowercase"}}; }, "Lowercase"},
      {[](nlohmann::json& j) {
         j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "\u2581"}};
       },
       "Metaspace"},
      {[](nlohmann::json& j) { j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Removed"; },
       "Removed"},
      {[](nlohmann::json& j) { j["pre_tokenizer"] = nullptr; }, "ByteLevel"},
  };
  for (const Case& c : cases) {
    nlohmann::json j = base;
    c.change(j);
    auto t = ParseByteLevelBpeTokenizer(j.dump(), "tokenizer.json");
    ASSERT_FALSE(t.ok()) << c.words;
    EXPECT_NE(std::string(t.status().message()).find(c.words), std::string::npos) << t.status();
  }
}

}  // namespace
}  // namespace ptq
