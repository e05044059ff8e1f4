#include "common/model_config.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace ptq {

absl::StatusOr<std::string> ReadFileToString(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& json_text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(json_text);
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("config.json is not valid JSON: ", e.what()));
  }
  if (!j.is_object()) return absl::InvalidArgumentError("config.json is not a JSON object");
  ModelConfig c;
  auto get_int = [&](const char* key, int64_t& out, bool required) -> absl::Status {
    if (!j.contains(key) || j[key].is_null()) {
      return required ? absl::InvalidArgumentError(absl::StrCat("config.json lacks \"", key, "\""))
                      : absl::OkStatus();
    }
    if (!j[key].is_number_integer() || j[key].get<int64_t>() <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("config.json \"", key, "\" must be a positive integer"));
    }
    out = j[key].get<int64_t>();
    return absl::OkStatus();
  };
  auto get_double = [&](const char* key, double& out) -> absl::Status {
    if (!j.contains(key) || j[key].is_null()) return absl::OkStatus();
    if (!j[key].is_number()) {
      return absl::InvalidArgumentError(absl::StrCat("config.json \"", key, "\" must be a number"));
    }
    out = j[key].get<double>();
    return absl::OkStatus();
  };
  if (!j.contains("model_type") || !j["model_type"].is_string()) {
    return absl::InvalidArgumentError("config.json lacks \"model_type\"");
  }
  c.model_type = j["model_type"].get<std::string>();
  if (c.model_type != "llama" && c.model_type != "mistral" && c.model_type != "qwen2") {
    return absl::UnimplementedError(absl::StrCat("unsupported model_type \"", c.model_type,
                                                 "\" (supported: llama, mistral, qwen2)"));
  }
  if (j.contains("hidden_act") && j["hidden_act"] != "silu") {
    return absl::UnimplementedError(
        absl::StrCat("unsupported hidden_act ", j["hidden_act"].dump(), " (only silu)"));
  }
  PTQ_RETURN_IF_ERROR(get_int("hidden_size", c.hidden_size, true));
  PTQ_RETURN_IF_ERROR(get_int("intermediate_size", c.intermediate_size, true));
  PTQ_RETURN_IF_ERROR(get_int("num_hidden_layers", c.num_hidden_layers, true));
  PTQ_RETURN_IF_ERROR(get_int("num_attention_heads", c.num_attention_heads, true));
  c.num_key_value_heads = c.num_attention_heads;
  PTQ_RETURN_IF_ERROR(get_int("num_key_value_heads", c.num_key_value_heads, false));
  PTQ_RETURN_IF_ERROR(get_int("vocab_size", c.vocab_size, true));
  PTQ_RETURN_IF_ERROR(get_int("head_dim", c.head_dim, false));
  PTQ_RETURN_IF_ERROR(get_double("rms_norm_eps", c.rms_norm_eps));
  PTQ_RETURN_IF_ERROR(get_double("rope_theta", c.rope_theta));
  if (c.head_dim == 0) {
    if (c.hidden_size % c.num_attention_heads != 0) {
      return absl::InvalidArgumentError(absl::StrCat("hidden_size ", c.hidden_size,
                                                     " is not divisible by num_attention_heads ",
                                                     c.num_attention_heads));
    }
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  if (c.head_dim % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("head_dim ", c.head_dim, " must be even for RoPE"));
  }
  if (c.num_attention_heads % c.num_key_value_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "num_attention_heads ", c.num_attention_heads, " is not a multiple of num_key_value_heads ",
        c.num_key_value_heads));
  }
  if (j.contains("tie_word_embeddings") && j["tie_word_embeddings"].is_boolean()) {
    c.tie_word_embeddings = j["tie_word_embeddings"].get<bool>();
  }
  c.attention_bias = c.model_type == "qwen2";
  if (j.contains("attention_bias") && j["attention_bias"].is_boolean()) {
    c.attention_bias = j["attention_bias"].get<bool>() || c.model_type == "qwen2";
  }
  if (j.contains("torch_dtype") && j["torch_dtype"].is_string()) {
    c.torch_dtype = j["torch_dtype"].get<std::string>();
  }
  if (j.contains("rope_scaling") && j["rope_scaling"].is_object()) {
    const auto& rs = j["rope_scaling"];
    std::string type = rs.value("rope_type", rs.value("type", std::string()));
    if (type == "default") type = "";
    if (type != "" && type != "linear" && type != "llama3") {
      return absl::UnimplementedError(
          absl::StrCat("unsupported rope_scaling type \"", type, "\" (supported: linear, llama3)"));
    }
    c.rope_scaling.type = type;
    c.rope_scaling.factor = rs.value("factor", 1.0);
    c.rope_scaling.low_freq_factor = rs.value("low_freq_factor", 1.0);
    c.rope_scaling.high_freq_factor = rs.value("high_freq_factor", 4.0);
    c.rope_scaling.original_max_position_embeddings =
        rs.value("original_max_position_embeddings", int64_t{8192});
  }
  return c;
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir) {
  std::string path = model_dir + "/config.json";
  auto text = ReadFileToString(path);
  if (!text.ok()) {
    return absl::NotFoundError(absl::StrCat("model folder ", model_dir, " has no readable config.json"));
  }
  auto config = ParseModelConfig(*text);
  if (!config.ok()) {
    return absl::Status(config.status().code(), absl::StrCat(path, ": ", config.status().message()));
  }
  return config;
}

}  // namespace ptq
