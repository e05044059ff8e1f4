// Where the pipeline sends a finished model: quantized linears as they are produced, unquantized
// tensors copied as they are. Implementations decide the on-disk format; Finish makes the result
// visible under its final name atomically (nothing half-written ever appears there).
#pragma once

#include <string>

#include "absl/status/status.h"
#include "common/safetensors_reader.h"
#include "core/quant/quantized_linear.h"

namespace ptq {

class CheckpointSink {
 public:
  virtual ~CheckpointSink() = default;
  // weight_name: the Hugging Face name of the float weight, e.g.
  // "model.layers.0.self_attn.q_proj.weight".
  virtual absl::Status AddQuantized(const std::string& weight_name, const QuantizedLinear& q) = 0;
  // A tensor kept in full precision, copied in its own dtype.
  virtual absl::Status AddTensor(const TensorView& view) = 0;
  virtual absl::Status Finish() = 0;
};

}  // namespace ptq
