// Writes a GPTQ checkpoint (docs/formats.md) that vLLM, Hugging Face transformers and TGI load:
// per quantized linear `qweight`, `qzeros`, `scales` (float16) and `g_idx`; every other tensor copied
// in its own dtype; config.json with `quantization_config` (plus how ptq made it) and
// quantize_config.json; tokenizer files copied. Tensors stream into shards of at most
// `max_shard_bytes`; one shard is `model.safetensors`, several are `model-0000x-of-0000y.safetensors`
// with `model.safetensors.index.json`.
#pragma once

#include <string>

#include "core/checkpoint/checkpoint_sink.h"
#include "core/checkpoint/sharded_safetensors.h"

namespace ptq {

struct GptqCheckpointOptions {
  std::string dir;           // staging folder to write into
  std::string source_dir;    // the original model folder (tokenizer files are copied from it)
  std::string config_json;   // the original config.json text
  int bits = 4;
  int64_t group_size = 128;  // -1: per channel
  bool sym = false;
  bool desc_act = false;
  bool static_groups = false;
  double damp_percent = 0.01;
  bool v2 = false;           // "gptq_v2": zeros stored as they are instead of zero - 1
  std::string ptq_json;      // method and options, recorded under quantization_config.ptq
  uint64_t max_shard_bytes = 4ull << 30;
};

class GptqCheckpointWriter final : public CheckpointSink {
 public:
  explicit GptqCheckpointWriter(GptqCheckpointOptions options)
      : o_(std::move(options)), shards_(o_.dir, o_.max_shard_bytes) {}
  absl::Status AddQuantized(const std::string& weight_name, const QuantizedLinear& q) override;
  absl::Status AddTensor(const TensorView& view) override;
  absl::Status Finish() override;

 private:
  GptqCheckpointOptions o_;
  ShardedSafetensors shards_;
};

}  // namespace ptq
