#include "core/checkpoint/checkpoint_size.h"

#include <filesystem>

#include "absl/strings/str_cat.h"

namespace ptq {
namespace {

constexpr const char* kLinear[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                   "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                   "mlp.down_proj"};
// Room for config, report, JSON headers and rounding.
constexpr uint64_t kMarginBytes = 16ull << 20;

}  // namespace

absl::StatusOr<uint64_t> EstimateCheckpointBytes(const std::string& model_dir,
                                                 const ModelFiles& files, const ModelConfig& config,
                                                 int bits, int64_t group_size, bool dequantized) {
  namespace fs = std::filesystem;
  uint64_t model_bytes = 0;
  uint64_t model_elements_bytes_f32 = 0;  // what the model takes as float32 (dequantized format)
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(model_dir, ec)) {
    if (entry.path().extension() == ".safetensors") model_bytes += entry.file_size(ec);
  }
  if (ec) return absl::NotFoundError(absl::StrCat(model_dir, ": ", ec.message()));
  uint64_t linear_bytes = 0, quantized_bytes = 0;
  int64_t element_bytes = 2;
  for (int64_t layer = 0; layer < config.num_hidden_layers; ++layer) {
    for (const char* name : kLinear) {
      auto view = files.Get(absl::StrCat("model.layers.", layer, ".", name, ".weight"));
      if (!view.ok()) return view.status();
      const int64_t rows = view->shape.at(0), cols = view->shape.at(1);
      element_bytes = static_cast<int64_t>(view->num_bytes) / std::max<int64_t>(1, rows * cols);
      linear_bytes += view->num_bytes;
      const int64_t groups = group_size > 0 ? (cols + group_size - 1) / group_size : 1;
      // qweight (bits per weight, packed in int32 rows), qzeros (bits per group and row), scales
      // (fp16 per group and row), g_idx (int32 per column).
      quantized_bytes += static_cast<uint64_t>(rows * cols * bits / 8 + groups * rows * bits / 8 +
                                               groups * rows * 2 + cols * 4);
    }
  }
  if (dequantized) {
    model_elements_bytes_f32 = model_bytes / std::max<int64_t>(1, element_bytes) * 4;
    return model_elements_bytes_f32 + kMarginBytes;
  }
  return (model_bytes - std::min(model_bytes, linear_bytes)) + quantized_bytes + kMarginBytes;
}

}  // namespace ptq
