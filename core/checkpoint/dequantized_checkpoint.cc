#include "core/checkpoint/dequantized_checkpoint.h"

#include <ATen/ATen.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace ptq {

absl::Status DequantizedCheckpoint::AddQuantized(const std::string& weight_name,
                                                 const QuantizedLinear& q) {
  at::Tensor w = q.weight.to(at::kFloat).contiguous();
  std::vector<uint8_t> bytes(w.numel() * sizeof(float));
  std::memcpy(bytes.data(), w.data_ptr<float>(), bytes.size());
  return writer_.AddTensor(weight_name, DType::kF32, w.sizes().vec(), std::move(bytes));
}

absl::Status DequantizedCheckpoint::AddTensor(const TensorView& view) {
  return writer_.AddTensor(view.name, view.dtype, view.shape,
                           std::vector<uint8_t>(view.data, view.data + view.num_bytes));
}

absl::Status DequantizedCheckpoint::Finish() {
  PTQ_RETURN_IF_ERROR(writer_.Finish(dir_ + "/model.safetensors"));
  nlohmann::json config = nlohmann::json::parse(config_json_);
  config["ptq_quantization"] = nlohmann::json::parse(note_json_);
  return WriteFileAtomically(dir_ + "/config.json", config.dump(2) + "\n");
}

}  // namespace ptq
