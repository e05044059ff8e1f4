#include "common/tokenizer.h"

#include <filesystem>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/bpe_tokenizer.h"
#include "common/model_config.h"
#include "common/sentencepiece_model.h"
#include "common/status_macros.h"

namespace ptq {
namespace {

class ByteTokenizer final : public Tokenizer {
 public:
  absl::StatusOr<std::vector<int32_t>> Encode(const std::string& text) const override {
    std::vector<int32_t> ids(text.size());
    for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<uint8_t>(text[i]);
    return ids;
  }
  std::string Name() const override { return "bytes"; }
};

class SentencePieceTokenizer final : public Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& path) {
    std::string error;
    auto model = SentencePieceModel::Load(path, &error);
    if (!model) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot load SentencePiece model ", path, ": ", error));
    }
    return std::unique_ptr<Tokenizer>(new SentencePieceTokenizer(std::move(model)));
  }
  absl::StatusOr<std::vector<int32_t>> Encode(const std::string& text) const override {
    std::vector<int> ids;
    std::string error;
    if (!model_->Encode(text, &ids, &error)) {
      return absl::InternalError(absl::StrCat("SentencePiece: ", error));
    }
    return std::vector<int32_t>(ids.begin(), ids.end());
  }
  std::string Name() const override { return "sentencepiece"; }

 private:
  explicit SentencePieceTokenizer(std::unique_ptr<SentencePieceModel> model)
      : model_(std::move(model)) {}
  std::unique_ptr<SentencePieceModel> model_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> TokenizerForModel(const std::string& model_dir,
                                                             int64_t vocab_size) {
  std::string sp_path = model_dir + "/tokenizer.model";
  if (std::filesystem::exists(sp_path)) return SentencePieceTokenizer::Load(sp_path);
  std::string json_path = model_dir + "/tokenizer.json";
  if (std::filesystem::exists(json_path)) return LoadByteLevelBpeTokenizer(json_path);
  if (vocab_size == 256) return std::unique_ptr<Tokenizer>(new ByteTokenizer());
  return absl::UnimplementedError(absl::StrCat(
      "model ", model_dir, " has neither tokenizer.model nor tokenizer.json and is not byte-level "
      "(vocab_size ", vocab_size,
      "): pre-tokenise the text into a .ids file (whitespace-separated token ids)"));
}

absl::StatusOr<std::vector<int32_t>> LoadTokens(const std::string& path, const Tokenizer& tokenizer,
                                                int64_t vocab_size) {
  auto text = ReadFileToString(path);
  if (!text.ok()) return absl::NotFoundError(absl::StrCat("cannot read text file ", path));
  std::vector<int32_t> ids;
  if (absl::EndsWith(path, ".ids")) {
    std::istringstream in(*text);
    long long id;
    while (in >> id) {
      if (id < 0 || id >= vocab_size) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": token id ", id, " outside the vocabulary of ", vocab_size));
      }
      ids.push_back(static_cast<int32_t>(id));
    }
    if (!in.eof()) return absl::InvalidArgumentError(absl::StrCat(path, ": not a list of integer ids"));
    return ids;
  }
  PTQ_ASSIGN_OR_RETURN(ids, tokenizer.Encode(*text));
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": token id ", id, " outside the vocabulary of ", vocab_size));
    }
  }
  return ids;
}

}  // namespace ptq
