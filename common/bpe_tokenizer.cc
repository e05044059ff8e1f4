#include "common/bpe_tokenizer.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/model_config.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

#if defined(PTQ_HAVE_ICU)
#include <unicode/normalizer2.h>
#include <unicode/regex.h>
#include <unicode/unistr.h>
#endif

namespace ptq {

#if !defined(PTQ_HAVE_ICU)

absl::StatusOr<std::unique_ptr<Tokenizer>> ParseByteLevelBpeTokenizer(const std::string&,
                                                                      const std::string& source) {
  return absl::UnimplementedError(absl::StrCat(
      source, ": this build has no ICU (libicu-dev), which tokenizer.json's regexes need; "
              "pre-tokenise the text into a .ids file"));
}

#else

namespace {

// GPT-2's pattern, which ByteLevel applies itself when use_regex is true.
constexpr char kGpt2Pattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest to U+0100 onwards, so every
// byte is one visible character. Returned as each byte's UTF-8.
std::vector<std::string> ByteToUnicode() {
  std::vector<int> code(256, -1);
  auto keep = [&](int lo, int hi) {
    for (int b = lo; b <= hi; ++b) code[b] = b;
  };
  keep('!', '~');
  keep(0xA1, 0xAC);
  keep(0xAE, 0xFF);
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    if (code[b] < 0) code[b] = next++;
  }
  std::vector<std::string> out(256);
  for (int b = 0; b < 256; ++b) {
    icu::UnicodeString(static_cast<UChar32>(code[b])).toUTF8String(out[b]);
  }
  return out;
}

// One code point's UTF-8 length from its lead byte.
size_t Utf8Length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead >> 5) == 0x6) return 2;
  if ((lead >> 4) == 0xE) return 3;
  return 4;
}

// ICU's \s is [\t\n\f\r\p{Z}]; Oniguruma's (what tokenizers uses) is Unicode White_Space, which also
// holds U+000B and U+0085.
std::string OnigurumaWhitespace(const std::string& pattern) {
  std::string out;
  for (size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] == '\\' && i + 1 < pattern.size()) {
      const char c = pattern[i + 1];
      if (c == 's') {
        out += "\\p{White_Space}";
      } else if (c == 'S') {
        out += "\\P{White_Space}";
      } else {
        out += pattern.substr(i, 2);
      }
      ++i;
    } else {
      out += pattern[i];
    }
  }
  return out;
}

struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool lstrip = false;
  bool rstrip = false;
};

// One pre-tokenizer step: a regex whose matches and the text between them become pieces
// (tokenizers' Split with behavior Isolated), then, for ByteLevel, the prefix space.
struct PreStep {
  std::unique_ptr<icu::RegexPattern> pattern;  // null: no split
  bool byte_level = false;
  bool add_prefix_space = false;
};

class ByteLevelBpeTokenizer final : public Tokenizer {
 public:
  absl::StatusOr<std::vector<int32_t>> Encode(const std::string& text) const override;
  std::string Name() const override { return "tokenizer.json (byte-level BPE)"; }

  std::string source;
  std::vector<const icu::Normalizer2*> normalizers;
  std::vector<PreStep> steps;
  std::unordered_map<std::string, int32_t> vocab;
  std::unordered_map<std::string, int32_t> merge_rank;  // "left\x01right" -> rank
  bool ignore_merges = false;
  int32_t unk_id = -1;
  std::vector<AddedToken> added;  // longest first, so the first match at a position is the longest
  std::array<std::vector<const AddedToken*>, 256> added_by_first_byte;
  std::vector<std::string> byte_chars = ByteToUnicode();

 private:
  absl::Status EncodeSegment(const std::string& segment, std::vector<int32_t>& ids) const;
  absl::Status EncodeWord(const std::string& word, std::vector<int32_t>& ids) const;
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

absl::StatusOr<std::vector<int32_t>> ByteLevelBpeTokenizer::Encode(const std::string& text) const {
  std::vector<int32_t> ids;
  size_t segment_start = 0, pos = 0;
  while (pos < text.size()) {
    const AddedToken* hit = nullptr;
    for (const AddedToken* t : added_by_first_byte[static_cast<unsigned char>(text[pos])]) {
      if (text.compare(pos, t->content.size(), t->content) == 0) {
        hit = t;
        break;
      }
    }
    if (hit == nullptr) {
      ++pos;
      continue;
    }
    size_t before_end = pos, after = pos + hit->content.size();
    if (hit->lstrip) {
      while (before_end > segment_start && IsSpace(text[before_end - 1])) --before_end;
    }
    if (hit->rstrip) {
      while (after < text.size() && IsSpace(text[after])) ++after;
    }
    PTQ_RETURN_IF_ERROR(EncodeSegment(text.substr(segment_start, before_end - segment_start), ids));
    ids.push_back(hit->id);
    segment_start = pos = after;
  }
  PTQ_RETURN_IF_ERROR(EncodeSegment(text.substr(segment_start), ids));
  return ids;
}

absl::Status ByteLevelBpeTokenizer::EncodeSegment(const std::string& segment,
                                                  std::vector<int32_t>& ids) const {
  if (segment.empty()) return absl::OkStatus();
  UErrorCode status = U_ZERO_ERROR;
  icu::UnicodeString text = icu::UnicodeString::fromUTF8(segment);
  for (const icu::Normalizer2* n : normalizers) {
    text = n->normalize(text, status);
    if (U_FAILURE(status)) {
      return absl::InternalError(absl::StrCat(source, ": normalization failed: ", u_errorName(status)));
    }
  }
  std::vector<icu::UnicodeString> pieces = {text};
  for (const PreStep& step : steps) {
    std::vector<icu::UnicodeString> next;
    for (icu::UnicodeString& piece : pieces) {
      if (step.add_prefix_space && !piece.startsWith(icu::UnicodeString(u' '))) {
        piece.insert(0, u' ');
      }
      if (step.pattern == nullptr) {
        next.push_back(piece);
        continue;
      }
      std::unique_ptr<icu::RegexMatcher> m(step.pattern->matcher(piece, status));
      if (U_FAILURE(status)) {
        return absl::InternalError(absl::StrCat(source, ": regex failed: ", u_errorName(status)));
      }
      int32_t last = 0;
      while (m->find(status) && U_SUCCESS(status)) {
        const int32_t start = m->start(status), end = m->end(status);
        if (start > last) next.emplace_back(piece, last, start - last);
        if (end > start) next.emplace_back(piece, start, end - start);
        last = end;
      }
      if (U_FAILURE(status)) {
        return absl::InternalError(absl::StrCat(source, ": regex failed: ", u_errorName(status)));
      }
      if (last < piece.length()) next.emplace_back(piece, last);
    }
    pieces = std::move(next);
  }
  for (const icu::UnicodeString& piece : pieces) {
    std::string bytes;
    piece.toUTF8String(bytes);
    std::string word;
    for (unsigned char b : bytes) word += byte_chars[b];
    if (!word.empty()) PTQ_RETURN_IF_ERROR(EncodeWord(word, ids));
  }
  return absl::OkStatus();
}

absl::Status ByteLevelBpeTokenizer::EncodeWord(const std::string& word,
                                               std::vector<int32_t>& ids) const {
  {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    auto it = cache_.find(word);
    if (it != cache_.end()) {
      ids.insert(ids.end(), it->second.begin(), it->second.end());
      return absl::OkStatus();
    }
  }
  std::vector<int32_t> out;
  auto whole = vocab.find(word);
  if (ignore_merges && whole != vocab.end()) {
    out.push_back(whole->second);
  } else {
    std::vector<std::string> symbols;
    for (size_t i = 0; i < word.size();) {
      const size_t n = Utf8Length(static_cast<unsigned char>(word[i]));
      symbols.push_back(word.substr(i, n));
      i += n;
    }
    // The lowest-ranked adjacent pair merges first, the leftmost among equals (tokenizers' BPE).
    while (symbols.size() > 1) {
      int32_t best = -1;
      size_t at = 0;
      for (size_t i = 0; i + 1 < symbols.size(); ++i) {
        auto r = merge_rank.find(symbols[i] + '\x01' + symbols[i + 1]);
        if (r != merge_rank.end() && (best < 0 || r->second < best)) {
          best = r->second;
          at = i;
        }
      }
      if (best < 0) break;
      symbols[at] += symbols[at + 1];
      symbols.erase(symbols.begin() + at + 1);
    }
    for (const std::string& s : symbols) {
      auto it = vocab.find(s);
      if (it != vocab.end()) {
        out.push_back(it->second);
      } else if (unk_id >= 0) {
        out.push_back(unk_id);
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat(source, ": piece \"", s, "\" is not in the vocabulary and there is no unk_token"));
      }
    }
  }
  ids.insert(ids.end(), out.begin(), out.end());
  std::lock_guard<std::mutex> lock(cache_mutex_);
  if (cache_.size() < (1u << 20)) cache_.emplace(word, std::move(out));
  return absl::OkStatus();
}

absl::Status Unimplemented(const std::string& source, const std::string& what) {
  return absl::UnimplementedError(absl::StrCat(source, ": ", what, " is not implemented"));
}

std::string TypeOf(const nlohmann::json& j) {
  return j.is_object() && j.contains("type") && j["type"].is_string() ? j["type"].get<std::string>()
                                                                        : std::string("?");
}

absl::Status AddNormalizer(const nlohmann::json& j, ByteLevelBpeTokenizer& t) {
  if (j.is_null()) return absl::OkStatus();
  const std::string type = TypeOf(j);
  if (type == "Sequence") {
    for (const auto& n : j.value("normalizers", nlohmann::json::array())) {
      PTQ_RETURN_IF_ERROR(AddNormalizer(n, t));
    }
    return absl::OkStatus();
  }
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* n = nullptr;
  if (type == "NFC") n = icu::Normalizer2::getNFCInstance(status);
  else if (type == "NFKC") n = icu::Normalizer2::getNFKCInstance(status);
  else if (type == "NFD") n = icu::Normalizer2::getNFDInstance(status);
  else if (type == "NFKD") n = icu::Normalizer2::getNFKDInstance(status);
  else return Unimplemented(t.source, absl::StrCat("normalizer \"", type, "\""));
  if (U_FAILURE(status)) return absl::InternalError(absl::StrCat(t.source, ": ICU normalizer unavailable"));
  t.normalizers.push_back(n);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<icu::RegexPattern>> Compile(const std::string& pattern,
                                                           const std::string& source) {
  UErrorCode status = U_ZERO_ERROR;
  UParseError where;
  std::unique_ptr<icu::RegexPattern> p(icu::RegexPattern::compile(
      icu::UnicodeString::fromUTF8(OnigurumaWhitespace(pattern)), 0, where, status));
  if (U_FAILURE(status)) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": pre-tokenizer regex ", pattern,
                                                   " does not compile: ", u_errorName(status)));
  }
  return p;
}

absl::Status AddPreTokenizer(const nlohmann::json& j, ByteLevelBpeTokenizer& t, bool& byte_level) {
  if (j.is_null()) return absl::OkStatus();
  const std::string type = TypeOf(j);
  if (type == "Sequence") {
    for (const auto& p : j.value("pretokenizers", nlohmann::json::array())) {
      PTQ_RETURN_IF_ERROR(AddPreTokenizer(p, t, byte_level));
    }
    return absl::OkStatus();
  }
  PreStep step;
  if (type == "ByteLevel") {
    byte_level = true;
    step.byte_level = true;
    step.add_prefix_space = j.value("add_prefix_space", false);
    if (j.value("use_regex", true)) {
      PTQ_ASSIGN_OR_RETURN(step.pattern, Compile(kGpt2Pattern, t.source));
    }
  } else if (type == "Split") {
    if (j.value("behavior", std::string()) != "Isolated" || j.value("invert", false)) {
      return Unimplemented(t.source, absl::StrCat("Split pre-tokenizer with behavior ",
                                                  j.value("behavior", nlohmann::json()).dump(),
                                                  j.value("invert", false) ? " inverted" : ""));
    }
    const nlohmann::json& pattern = j.value("pattern", nlohmann::json());
    if (pattern.contains("Regex") && pattern["Regex"].is_string()) {
      PTQ_ASSIGN_OR_RETURN(step.pattern, Compile(pattern["Regex"].get<std::string>(), t.source));
    } else if (pattern.contains("String") && pattern["String"].is_string()) {
      icu::UnicodeString literal = icu::UnicodeString::fromUTF8(pattern["String"].get<std::string>());
      UErrorCode status = U_ZERO_ERROR;
      step.pattern.reset(icu::RegexPattern::compile(literal, UREGEX_LITERAL, status));
      if (U_FAILURE(status)) return absl::InvalidArgumentError(absl::StrCat(t.source, ": bad Split"));
    } else {
      return absl::InvalidArgumentError(absl::StrCat(t.source, ": Split pre-tokenizer without a pattern"));
    }
  } else {
    return Unimplemented(t.source, absl::StrCat("pre-tokenizer \"", type, "\""));
  }
  t.steps.push_back(std::move(step));
  return absl::OkStatus();
}

absl::Status ParseModel(const nlohmann::json& m, ByteLevelBpeTokenizer& t) {
  const std::string type = m.is_object() ? m.value("type", std::string("BPE")) : std::string("?");
  if (type != "BPE") {
    return Unimplemented(t.source, absl::StrCat("tokenizer model \"", type,
                                                "\" (only byte-level BPE; WordPiece, Unigram and "
                                                "WordLevel are not)"));
  }
  if (m.value("byte_fallback", false)) {
    return Unimplemented(t.source, "BPE byte_fallback (a SentencePiece-style tokenizer: use its "
                                   "tokenizer.model)");
  }
  if (!m.value("dropout", nlohmann::json()).is_null()) return Unimplemented(t.source, "BPE dropout");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    const nlohmann::json& v = m.value(key, nlohmann::json());
    if (!v.is_null() && v != "") return Unimplemented(t.source, absl::StrCat("BPE ", key));
  }
  t.ignore_merges = m.value("ignore_merges", false);
  if (!m.contains("vocab") || !m["vocab"].is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(t.source, ": BPE model without a vocab"));
  }
  for (const auto& [token, id] : m["vocab"].items()) {
    if (!id.is_number_integer()) return absl::InvalidArgumentError(absl::StrCat(t.source, ": bad vocab id"));
    t.vocab[token] = id.get<int32_t>();
  }
  int32_t rank = 0;
  for (const auto& merge : m.value("merges", nlohmann::json::array())) {
    std::string left, right;
    if (merge.is_string()) {  // "left right"
      const std::string s = merge.get<std::string>();
      const size_t space = s.find(' ', 1);
      if (space == std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat(t.source, ": merge \"", s, "\" has no space"));
      }
      left = s.substr(0, space);
      right = s.substr(space + 1);
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string()) {
      left = merge[0].get<std::string>();
      right = merge[1].get<std::string>();
    } else {
      return absl::InvalidArgumentError(absl::StrCat(t.source, ": bad merge ", merge.dump()));
    }
    t.merge_rank.emplace(left + '\x01' + right, rank++);
  }
  const nlohmann::json& unk = m.value("unk_token", nlohmann::json());
  if (unk.is_string()) {
    auto it = t.vocab.find(unk.get<std::string>());
    if (it != t.vocab.end()) t.unk_id = it->second;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> ParseByteLevelBpeTokenizer(const std::string& json_text,
                                                                      const std::string& source) {
  nlohmann::json j = nlohmann::json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat(source, " is not a JSON object"));
  auto t = std::make_unique<ByteLevelBpeTokenizer>();
  t->source = source;
  try {
    PTQ_RETURN_IF_ERROR(ParseModel(j.value("model", nlohmann::json()), *t));
    PTQ_RETURN_IF_ERROR(AddNormalizer(j.value("normalizer", nlohmann::json()), *t));
    bool byte_level = false;
    PTQ_RETURN_IF_ERROR(AddPreTokenizer(j.value("pre_tokenizer", nlohmann::json()), *t, byte_level));
    if (!byte_level) {
      return Unimplemented(source, "a BPE tokenizer without the ByteLevel pre-tokenizer");
    }
    for (const auto& a : j.value("added_tokens", nlohmann::json::array())) {
      if (a.value("single_word", false)) {
        return Unimplemented(source, absl::StrCat("single_word added token ", a.value("content", "")));
      }
      AddedToken token;
      token.content = a.at("content").get<std::string>();
      token.id = a.at("id").get<int32_t>();
      token.lstrip = a.value("lstrip", false);
      token.rstrip = a.value("rstrip", false);
      if (!token.content.empty()) t->added.push_back(std::move(token));
    }
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", e.what()));
  }
  std::stable_sort(t->added.begin(), t->added.end(), [](const AddedToken& a, const AddedToken& b) {
    return a.content.size() > b.content.size();
  });
  for (const AddedToken& a : t->added) {
    t->added_by_first_byte[static_cast<unsigned char>(a.content[0])].push_back(&a);
  }
  return std::unique_ptr<Tokenizer>(std::move(t));
}

#endif  // PTQ_HAVE_ICU

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadByteLevelBpeTokenizer(const std::string& path) {
  PTQ_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  return ParseByteLevelBpeTokenizer(text, path);
}

}  // namespace ptq
