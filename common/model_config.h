// The fields of a Hugging Face config.json that the Llama family (Llama, Mistral, Qwen2, Qwen3 dense)
// needs. Any field that would change the computation and that the forward does not implement is
// refused by name when the config is parsed, never ignored.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ptq {

struct RopeScaling {
  std::string type;  // "" (none), "linear" or "llama3"
  double factor = 1.0;
  double low_freq_factor = 1.0;   // llama3
  double high_freq_factor = 4.0;  // llama3
  int64_t original_max_position_embeddings = 8192;
};

struct ModelConfig {
  std::string model_type;  // llama, mistral, qwen2, qwen3
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;
  int64_t vocab_size = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v biases (Qwen2 always has them)
  bool qk_norm = false;         // Qwen3: RMSNorm over each head's query and key, before RoPE
  // Sliding-window attention (Mistral's sliding_window; Qwen2/Qwen3's use_sliding_window with
  // max_window_layers or layer_types): query i sees key j only if i - window < j <= i.
  int64_t sliding_window = 0;       // 0: no window
  std::vector<bool> sliding_layers;  // [num_hidden_layers]: which layers use the window
  std::string torch_dtype;

  int64_t NumQueriesPerKv() const { return num_attention_heads / num_key_value_heads; }
  // The attention window of decoder layer `layer`, 0 when it attends to every earlier token.
  int64_t AttentionWindow(int64_t layer) const {
    return layer >= 0 && layer < static_cast<int64_t>(sliding_layers.size()) && sliding_layers[layer]
               ? sliding_window
               : 0;
  }
};

// Parses and validates config.json text: supported model_type and hidden_act, heads that divide the
// hidden size, key/value heads that divide the query heads.
absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& json_text);
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir);

absl::StatusOr<std::string> ReadFileToString(const std::string& path);

}  // namespace ptq
