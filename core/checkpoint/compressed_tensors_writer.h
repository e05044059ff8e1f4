// Writes a compressed-tensors "pack-quantized" checkpoint (llm-compressor's format; docs/serving.md):
// per quantized linear P (weight [out, in], b bits, groups of G):
//   P.weight_packed      int32 [out, ceil(in*b/32)]   codes packed along the input dimension
//   P.weight_scale       float16 [out, in/G]           ([out, 1] per channel)
//   P.weight_zero_point  int32 [ceil(out*b/32), in/G]  zero points packed along the output dimension
//                                                      (asymmetric grids only)
//   P.weight_shape       int64 [2] = {out, in}
//   P.weight_g_idx       int32 [in]                    group of each input column (act-order
//                                                      groups only: actorder "group")
// with W[n, k] = scale[n, g] * (code[n, k] - zero[n, g]), g = g_idx[k] (or k / G); every other
// tensor copied; config.json gains the quantization_config with one config group targeting Linear
// and lm_head ignored. Tensors stream into shards like the GPTQ writer's.
#pragma once

#include <string>

#include "core/checkpoint/checkpoint_sink.h"
#include "core/checkpoint/sharded_safetensors.h"

namespace ptq {

struct CompressedTensorsOptions {
  std::string dir;           // staging folder to write into
  std::string source_dir;    // the original model folder (tokenizer files are copied from it)
  std::string config_json;   // the original config.json text
  int bits = 4;
  int64_t group_size = 128;  // -1: per channel
  bool sym = false;
  // compressed-tensors' activation ordering: "group" (act-order groups, g_idx stored), "weight"
  // (act-order during quantization, groups in column order), or empty (none).
  std::string actorder;
  std::string ptq_json;      // method and options, recorded under quantization_config.ptq
  uint64_t max_shard_bytes = 4ull << 30;
};

// The quantization_config a pack-quantized checkpoint with these options carries.
std::string CompressedTensorsConfigJson(const CompressedTensorsOptions& options);

class CompressedTensorsWriter final : public CheckpointSink {
 public:
  explicit CompressedTensorsWriter(CompressedTensorsOptions options)
      : o_(std::move(options)), shards_(o_.dir, o_.max_shard_bytes) {}
  absl::Status AddQuantized(const std::string& weight_name, const QuantizedLinear& q) override;
  absl::Status AddTensor(const TensorView& view) override;
  absl::Status Finish() override;

 private:
  CompressedTensorsOptions o_;
  ShardedSafetensors shards_;
};

}  // namespace ptq
