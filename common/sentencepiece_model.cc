#include "common/sentencepiece_model.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace ptq {
namespace {

std::string ShellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

}  // namespace

std::unique_ptr<SentencePieceModel> SentencePieceModel::Load(const std::string& path,
                                                             std::string* error) {
  if (!std::filesystem::exists(path)) {
    *error = "no such file";
    return nullptr;
  }
  if (std::system("command -v spm_encode >/dev/null 2>&1") != 0) {
    *error = "spm_encode not found (install Debian's `sentencepiece` package)";
    return nullptr;
  }
  return std::unique_ptr<SentencePieceModel>(new SentencePieceModel(path));
}

bool SentencePieceModel::Encode(const std::string& text, std::vector<int>* ids,
                                std::string* error) const {
  char tmpl[] = "/tmp/ptq-spm-XXXXXX";
  int fd = ::mkstemp(tmpl);
  if (fd < 0) {
    *error = "cannot create a temporary file";
    return false;
  }
  ::close(fd);
  {
    std::ofstream out(tmpl, std::ios::binary);
    out << text;
  }
  std::string cmd = "spm_encode --output_format=id --model=" + ShellQuote(path_) + " < " +
                    ShellQuote(tmpl);
  FILE* pipe = ::popen(cmd.c_str(), "r");
  if (pipe == nullptr) {
    std::remove(tmpl);
    *error = "cannot run spm_encode";
    return false;
  }
  std::string output;
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), pipe)) > 0) output.append(buf, n);
  int status = ::pclose(pipe);
  std::remove(tmpl);
  if (status != 0) {
    *error = "spm_encode failed";
    return false;
  }
  std::istringstream in(output);
  int id;
  while (in >> id) ids->push_back(id);
  return true;
}

}  // namespace ptq
