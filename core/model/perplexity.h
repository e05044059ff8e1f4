// Perplexity of a model on a token stream: exp of the mean next-token loss over non-overlapping
// windows of `seq_len` tokens, every window scored in full (docs/formats.md). Runs block by block over
// all windows of a chunk, so each block's weights are loaded once per chunk.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "core/model/llama_model.h"

namespace ptq {

struct PerplexityOptions {
  int64_t seq_len = 256;
  int64_t max_windows = 0;          // 0: all complete windows
  int64_t batch_windows = 16;       // windows per forward call
  int64_t chunk_tokens = 1 << 17;   // hidden states kept at once (2 GiB at hidden 4096)
  std::function<void(int64_t done, int64_t total)> on_progress;  // units: block passes
};

struct PerplexityResult {
  double perplexity = 0;
  double mean_nll = 0;
  int64_t windows = 0;
  int64_t scored_tokens = 0;  // windows * (seq_len - 1)
};

absl::StatusOr<PerplexityResult> EvaluatePerplexity(LlamaModel& model,
                                                    const std::vector<int32_t>& tokens,
                                                    const PerplexityOptions& options);

}  // namespace ptq
