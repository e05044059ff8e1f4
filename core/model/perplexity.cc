#include "core/model/perplexity.h"

#include <ATen/ATen.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "core/model/llama_block.h"
#include "core/model/rope.h"

namespace ptq {

absl::StatusOr<PerplexityResult> EvaluatePerplexity(LlamaModel& model,
                                                    const std::vector<int32_t>& tokens,
                                                    const PerplexityOptions& opt) {
  const ModelConfig& c = model.config();
  if (opt.seq_len < 2) return absl::InvalidArgumentError("evaluation seq_len must be at least 2");
  int64_t windows = static_cast<int64_t>(tokens.size()) / opt.seq_len;
  if (opt.max_windows > 0) windows = std::min(windows, opt.max_windows);
  if (windows == 0) {
    return absl::InvalidArgumentError(absl::StrCat("evaluation text has ", tokens.size(),
                                                   " tokens, fewer than one window of ", opt.seq_len));
  }
  at::Tensor ids = at::empty({windows, opt.seq_len}, at::kLong);
  auto* p = ids.data_ptr<int64_t>();
  for (int64_t i = 0; i < windows * opt.seq_len; ++i) p[i] = tokens[i];

  const c10::Device device = model.device();
  RopeTable rope = BuildRopeTable(c, opt.seq_len).To(device);
  const int64_t chunk_windows = std::max<int64_t>(1, opt.chunk_tokens / opt.seq_len);
  const int64_t num_chunks = (windows + chunk_windows - 1) / chunk_windows;
  const int64_t total_steps = num_chunks * c.num_hidden_layers;
  int64_t steps = 0;
  // Summed on the device, read once at the end: no host round trip per batch.
  at::Tensor nll_sum = at::zeros({}, at::TensorOptions().dtype(at::kDouble).device(device));
  for (int64_t c0 = 0; c0 < windows; c0 += chunk_windows) {
    int64_t cn = std::min(chunk_windows, windows - c0);
    at::Tensor chunk_ids = ids.narrow(0, c0, cn);
    PTQ_ASSIGN_OR_RETURN(at::Tensor hidden, model.Embed(chunk_ids));
    for (int64_t layer = 0; layer < c.num_hidden_layers; ++layer) {
      PTQ_ASSIGN_OR_RETURN(BlockWeights w, model.Block(layer));
      for (int64_t b0 = 0; b0 < cn; b0 += opt.batch_windows) {
        int64_t bn = std::min(opt.batch_windows, cn - b0);
        at::Tensor out = BlockForward(hidden.narrow(0, b0, bn), w, c, rope);
        hidden.narrow(0, b0, bn).copy_(out);
      }
      if (opt.on_progress) opt.on_progress(++steps, total_steps);
    }
    for (int64_t b0 = 0; b0 < cn; b0 += opt.batch_windows) {
      int64_t bn = std::min(opt.batch_windows, cn - b0);
      PTQ_ASSIGN_OR_RETURN(at::Tensor logits, model.Logits(hidden.narrow(0, b0, bn)));
      at::Tensor logp = at::log_softmax(logits.narrow(1, 0, opt.seq_len - 1), -1);
      at::Tensor targets = chunk_ids.narrow(0, b0, bn).narrow(1, 1, opt.seq_len - 1).to(device);
      at::Tensor picked = logp.gather(-1, targets.unsqueeze(-1));
      nll_sum.sub_(picked.to(at::kDouble).sum());
    }
  }
  PerplexityResult r;
  r.windows = windows;
  r.scored_tokens = windows * (opt.seq_len - 1);
  r.mean_nll = nll_sum.item<double>() / static_cast<double>(r.scored_tokens);
  r.perplexity = std::exp(r.mean_nll);
  return r;
}

}  // namespace ptq
