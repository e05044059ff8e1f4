// A Hugging Face tokenizer.json with a byte-level BPE model (GPT-2, Llama 3, Qwen2/Qwen3, ...):
// added/special tokens split off first, the normalizer (NFC, NFKC), the pre-tokenizer (Split with a
// regex, ByteLevel with or without GPT-2's pattern, Sequence of these), GPT-2's byte-to-unicode
// mapping, merges by rank. Text is encoded as `tokenizer.encode(text, add_special_tokens=False)`
// does: no BOS or template, the stream the calibration windows are cut from.
//
// Anything else in the file that changes the ids (another model type such as WordPiece or Unigram,
// another normalizer or pre-tokenizer, byte_fallback, dropout, subword prefixes) is refused by name
// when the file is loaded. The regexes need ICU; a build without it refuses every tokenizer.json.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/tokenizer.h"

namespace ptq {

// json_text: the contents of a tokenizer.json; `source` names it in errors.
absl::StatusOr<std::unique_ptr<Tokenizer>> ParseByteLevelBpeTokenizer(const std::string& json_text,
                                                                      const std::string& source);
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadByteLevelBpeTokenizer(const std::string& path);

}  // namespace ptq
