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

namespace {

bool IsSet(const nlohmann::json& j, const char* key) {
  if (!j.contains(key) || j[key].is_null()) return false;
  const nlohmann::json& v = j[key];
  if (v.is_boolean()) return v.get<bool>();
  if (v.is_number()) return v.get<double>() != 0;
  return true;
}

// Fields of related configs that change the computation and that the forward does not implement:
// refused by name, so a model never runs as if they were not there.
absl::Status RefuseUnimplementedFields(const nlohmann::json& j, const std::string& model_type) {
  struct Field {
    const char* key;
    const char* what;
  };
  static constexpr Field kFields[] = {
      {"attn_logit_softcapping", "attention-logit soft-capping"},
      {"final_logit_softcapping", "final-logit soft-capping"},
      {"attention_sink_size", "attention sinks"},
      {"num_experts", "mixture-of-experts layers"},
      {"num_local_experts", "mixture-of-experts layers"},
      {"n_routed_experts", "mixture-of-experts layers"},
      {"num_experts_per_tok", "mixture-of-experts routing"},
      {"moe_intermediate_size", "mixture-of-experts layers"},
      {"mlp_bias", "MLP biases"},
      {"use_qk_norm", "query/key norms of this family"},
      {"qk_layernorm", "query/key layer norms"},
      {"fused_qkv", "fused q/k/v projections"},
  };
  for (const Field& f : kFields) {
    if (IsSet(j, f.key)) {
      return absl::UnimplementedError(absl::StrCat("config.json \"", f.key, "\" (", f.what,
                                                   ") is not implemented"));
    }
  }
  // Llama, Mistral and Qwen3 put a bias on o_proj too when attention_bias is set (Qwen2 has q/k/v
  // biases only, always).
  if (model_type != "qwen2" && IsSet(j, "attention_bias")) {
    return absl::UnimplementedError(absl::StrCat(
        "config.json \"attention_bias\": true (biases on q/k/v/o_proj for ", model_type,
        ") is not implemented"));
  }
  if (j.contains("partial_rotary_factor") && !j["partial_rotary_factor"].is_null() &&
      (!j["partial_rotary_factor"].is_number() || j["partial_rotary_factor"].get<double>() != 1.0)) {
    return absl::UnimplementedError(
        "config.json \"partial_rotary_factor\" other than 1 (RoPE on part of a head) is not "
        "implemented");
  }
  return absl::OkStatus();
}

// rope_scaling (transformers 4.x) or rope_parameters (5.x, which also holds rope_theta).
absl::Status ParseRope(const nlohmann::json& j, ModelConfig& c) {
  const char* key = j.contains("rope_parameters") && j["rope_parameters"].is_object()
                        ? "rope_parameters"
                        : "rope_scaling";
  if (!j.contains(key) || j[key].is_null()) return absl::OkStatus();
  const nlohmann::json& rs = j[key];
  if (!rs.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat("config.json \"", key, "\" must be an object"));
  }
  try {
    std::string type = rs.value("rope_type", rs.value("type", std::string()));
    if (type == "default") type = "";
    if (type != "" && type != "linear" && type != "llama3") {
      return absl::UnimplementedError(absl::StrCat("unsupported ", key, " type \"", type,
                                                   "\" (supported: default, linear, llama3)"));
    }
    c.rope_scaling.type = type;
    c.rope_scaling.factor = rs.value("factor", 1.0);
    c.rope_scaling.low_freq_factor = rs.value("low_freq_factor", 1.0);
    c.rope_scaling.high_freq_factor = rs.value("high_freq_factor", 4.0);
    c.rope_scaling.original_max_position_embeddings =
        rs.value("original_max_position_embeddings", int64_t{8192});
    c.rope_theta = rs.value("rope_theta", c.rope_theta);
    if (IsSet(rs, "partial_rotary_factor") && rs["partial_rotary_factor"] != 1.0) {
      return absl::UnimplementedError(absl::StrCat("config.json \"", key,
                                                   "\".partial_rotary_factor is not implemented"));
    }
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("config.json \"", key, "\": ", e.what()));
  }
  return absl::OkStatus();
}

// Which layers attend through a sliding window, as transformers decides: Mistral every layer when
// sliding_window is set; Qwen2/Qwen3 only with use_sliding_window, the layers from
// max_window_layers on, unless layer_types lists each layer's kind.
absl::Status ParseSlidingWindow(const nlohmann::json& j, ModelConfig& c) {
  const int64_t n = c.num_hidden_layers;
  c.sliding_layers.assign(n, false);
  auto positive = [&](const char* key, int64_t& out) -> absl::Status {
    if (!j[key].is_number_integer() || j[key].get<int64_t>() <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("config.json \"", key, "\" must be a positive integer or null"));
    }
    out = j[key].get<int64_t>();
    return absl::OkStatus();
  };
  const bool has_window = j.contains("sliding_window") && !j["sliding_window"].is_null();
  if (c.model_type == "llama") return absl::OkStatus();  // LlamaConfig has no window
  if (c.model_type == "mistral") {
    if (!has_window) return absl::OkStatus();
    PTQ_RETURN_IF_ERROR(positive("sliding_window", c.sliding_window));
    c.sliding_layers.assign(n, true);
    return absl::OkStatus();
  }
  // qwen2, qwen3
  if (!IsSet(j, "use_sliding_window") || !has_window) return absl::OkStatus();
  PTQ_RETURN_IF_ERROR(positive("sliding_window", c.sliding_window));
  if (j.contains("layer_types") && !j["layer_types"].is_null()) {
    const nlohmann::json& types = j["layer_types"];
    if (!types.is_array() || static_cast<int64_t>(types.size()) != n) {
      return absl::InvalidArgumentError(
          "config.json \"layer_types\" must list one entry per hidden layer");
    }
    for (int64_t i = 0; i < n; ++i) {
      if (types[i] == "sliding_attention") {
        c.sliding_layers[i] = true;
      } else if (types[i] != "full_attention") {
        return absl::UnimplementedError(absl::StrCat("config.json \"layer_types\" entry ",
                                                     types[i].dump(), " is not implemented"));
      }
    }
    return absl::OkStatus();
  }
  int64_t first = 28;  // transformers' default max_window_layers
  if (j.contains("max_window_layers") && !j["max_window_layers"].is_null()) {
    if (!j["max_window_layers"].is_number_integer() || j["max_window_layers"].get<int64_t>() < 0) {
      return absl::InvalidArgumentError(
          "config.json \"max_window_layers\" must be a non-negative integer");
    }
    first = j["max_window_layers"].get<int64_t>();
  }
  for (int64_t i = first; i < n; ++i) c.sliding_layers[i] = true;
  return absl::OkStatus();
}

}  // namespace

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
  if (c.model_type != "llama" && c.model_type != "mistral" && c.model_type != "qwen2" &&
      c.model_type != "qwen3") {
    return absl::UnimplementedError(absl::StrCat("unsupported model_type \"", c.model_type,
                                                 "\" (supported: llama, mistral, qwen2, qwen3)"));
  }
  PTQ_RETURN_IF_ERROR(RefuseUnimplementedFields(j, c.model_type));
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
  c.attention_bias = c.model_type == "qwen2";  // others' attention_bias is refused above
  if (j.contains("torch_dtype") && j["torch_dtype"].is_string()) {
    c.torch_dtype = j["torch_dtype"].get<std::string>();
  }
  PTQ_RETURN_IF_ERROR(ParseRope(j, c));
  PTQ_RETURN_IF_ERROR(ParseSlidingWindow(j, c));
  c.qk_norm = c.model_type == "qwen3";
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
