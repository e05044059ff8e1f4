// Which runtimes load a checkpoint, and with which kernel family: the facts of docs/serving.md (read
// from vLLM's, compressed-tensors' and GPTQModel's source) applied to one job's format, grid and
// model shapes. Every run prints this before it starts and writes it into ptq_report.json; a
// setting that no fast kernel loads (a group size that does not divide a layer, a shorter last
// group, a tensor-parallel split inside a group) is a warning, not an error: the checkpoint is still
// correct and still loads where the table says so. No LibTorch.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/model_config.h"
#include "core/pipeline/quantize_options.h"
#include "nlohmann/json.hpp"

namespace ptq {

struct ServingTarget {
  std::string runtime;  // "vLLM", "transformers"
  std::string kernel;   // the kernel family that runs it, or why none does
  bool loads = false;
};

struct ServingSupport {
  CheckpointFormat format = CheckpointFormat::kGptq;
  std::vector<ServingTarget> targets;
  // vLLM tensor-parallel sizes (of 1, 2, 4, 8) whose shards hold whole groups of every layer.
  std::vector<int> tensor_parallel;
  std::vector<std::string> warnings;
};

// REQUIRES: the options are valid for `config` (ValidateQuantizeOptions).
ServingSupport DescribeServing(const QuantizeOptions& options, const ModelConfig& config);

nlohmann::json ServingSupportJson(const ServingSupport& support);
// A few lines for the log: the format, one line per runtime, the warnings.
std::vector<std::string> ServingSupportLines(const ServingSupport& support);

}  // namespace ptq
