// A checkpoint sink that writes an ordinary Hugging Face model: quantized linears as their dequantized
// float32 weights, everything else copied. Any Llama loader (and `ptq eval`) reads it; it keeps the
// quantized model's exact values, not its compact form.
#pragma once

#include <memory>
#include <string>

#include "common/safetensors_writer.h"
#include "core/checkpoint/checkpoint_sink.h"

namespace ptq {

class DequantizedCheckpoint final : public CheckpointSink {
 public:
  // dir: the staging folder; config_json: the source config.json text, written with
  // `quantization_note` added under "ptq_quantization".
  DequantizedCheckpoint(std::string dir, std::string config_json, std::string quantization_note_json)
      : dir_(std::move(dir)),
        config_json_(std::move(config_json)),
        note_json_(std::move(quantization_note_json)) {}
  absl::Status AddQuantized(const std::string& weight_name, const QuantizedLinear& q) override;
  absl::Status AddTensor(const TensorView& view) override;
  absl::Status Finish() override;

 private:
  std::string dir_;
  std::string config_json_;
  std::string note_json_;
  SafetensorsWriter writer_;
};

}  // namespace ptq
