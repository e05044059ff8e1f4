// SentencePiece tokenisation through Debian's `spm_encode` tool (package `sentencepiece`).
// Why a subprocess: Debian's libsentencepiece carries protobuf-lite symbols that crash at load time
// next to the full libprotobuf that libtorch loads, so the library cannot live in our processes.
// Tokenising a calibration or evaluation text is a one-off step, so a process per file costs nothing.
// spm_encode encodes line by line; line breaks themselves produce no tokens.
#pragma once

#include <memory>
#include <string>
#include <vector>

namespace ptq {

class SentencePieceModel {
 public:
  // Returns null and sets *error when the model file or spm_encode is missing.
  static std::unique_ptr<SentencePieceModel> Load(const std::string& path, std::string* error);
  bool Encode(const std::string& text, std::vector<int>* ids, std::string* error) const;

 private:
  explicit SentencePieceModel(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

}  // namespace ptq
