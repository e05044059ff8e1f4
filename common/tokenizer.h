// Text to token ids: SentencePiece where the model folder has tokenizer.model, else Hugging Face's
// tokenizer.json (byte-level BPE, common/bpe_tokenizer.h), bytes for byte-vocabulary models
// (vocab_size 256, no tokenizer file), or files that are already ids (name ending in ".ids":
// whitespace-separated decimal ids).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ptq {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual absl::StatusOr<std::vector<int32_t>> Encode(const std::string& text) const = 0;
  virtual std::string Name() const = 0;
};

// Picks the tokenizer a model folder implies.
absl::StatusOr<std::unique_ptr<Tokenizer>> TokenizerForModel(const std::string& model_dir,
                                                             int64_t vocab_size);

// Reads a text or .ids file and returns its token ids, checked against the vocabulary.
absl::StatusOr<std::vector<int32_t>> LoadTokens(const std::string& path, const Tokenizer& tokenizer,
                                                int64_t vocab_size);

}  // namespace ptq
