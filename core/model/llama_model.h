// A Llama-family model read block by block: embeddings, one decoder block at a time, final norm and
// head. Nothing holds all blocks at once, so a model larger than RAM streams from its memory map.
#pragma once

#include <memory>
#include <string>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "common/model_config.h"
#include "core/model/block_weights.h"
#include "core/model/weight_source.h"

namespace ptq {

class LlamaModel {
 public:
  // Opens a Hugging Face model folder (config.json + safetensors).
  static absl::StatusOr<std::unique_ptr<LlamaModel>> Open(const std::string& model_dir);
  LlamaModel(ModelConfig config, std::unique_ptr<WeightSource> weights)
      : config_(std::move(config)), weights_(std::move(weights)) {}

  const ModelConfig& config() const { return config_; }
  // Where Embed, Block and Logits put their results (default: the CPU). The weights stay memory-
  // mapped on the host; a block is copied to the device when it is loaded.
  void SetDevice(c10::Device device) { device_ = device; }
  c10::Device device() const { return device_; }
  const WeightSource& weights() const { return *weights_; }

  // ids: [batch, tokens] int64 -> [batch, tokens, hidden] float32.
  absl::StatusOr<at::Tensor> Embed(const at::Tensor& ids);
  absl::StatusOr<BlockWeights> Block(int64_t layer) const;
  // hidden: [batch, tokens, hidden] -> logits [batch, tokens, vocab] (final norm, then head).
  absl::StatusOr<at::Tensor> Logits(const at::Tensor& hidden);

 private:
  absl::Status LoadEnds();
  ModelConfig config_;
  std::unique_ptr<WeightSource> weights_;
  at::Tensor embed_;  // [vocab, hidden], loaded on first use
  at::Tensor norm_;   // [hidden]
  at::Tensor head_;   // [vocab, hidden]
  c10::Device device_ = c10::kCPU;
};

}  // namespace ptq
