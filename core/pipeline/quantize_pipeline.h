// The one-process quantizer: calibrate, then per block collect statistics, quantize each linear layer
// in order (q/k/v, o, gate/up, down — each on the inputs the already-quantized layers produce), run
// the quantized block to feed the next block, and write the checkpoint. Perplexity before and after
// when an evaluation text is given.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/pipeline/quantize_options.h"

namespace ptq {

struct LayerReport;
class Collective;

// What a running job tells its owner after each linear layer (the service streams these as
// Watch events; `ptq quantize` prints them).
struct LayerProgress {
  int64_t block = 0;         // 0-based transformer block
  int64_t num_blocks = 0;
  int64_t layers_done = 0;   // linear layers finished in the whole job
  int64_t layers_total = 0;
  double elapsed_seconds = 0;
  double eta_seconds = 0;
  const LayerReport* layer = nullptr;
  bool reloaded = false;     // saved by an earlier run of this job and reloaded, not quantized again
};

// Optional hooks for a caller that runs the pipeline as a job. Not part of the checkpoint's options.
struct JobHooks {
  std::function<void(const LayerProgress&)> on_layer;
  // Called after block `block` is finished (its quantized tensors are in the sink); `reloaded`: an
  // earlier run of this job saved it and it was reloaded, not quantized again.
  std::function<void(int64_t block, int64_t num_blocks, bool reloaded)> on_block;
  // Checked between layers; when set the run stops with CANCELLED and leaves no checkpoint.
  const std::atomic<bool>* cancel = nullptr;
  // The worker group this process belongs to (nullptr: quantize alone). Every rank calls RunQuantize
  // with the same options; each runs the forwards of its share of the calibration batches and
  // quantizes its share of every layer's rows; rank 0 writes the checkpoint and evaluates.
  Collective* group = nullptr;
  // Called by the writer once the checkpoint is complete in its staging folder, before it replaces
  // the output: an error ends the run with it, leaving the output untouched and the block store in
  // place for a rerun. The service's worker asks its coordinator whether the attempt is current.
  std::function<absl::Status()> before_commit;
  // Labels this run's metrics (job_id); the service passes its job id.
  std::string job_id = "local";
};

struct LayerReport {
  std::string name;
  double loss = 0;           // tr((W - W_hat) H (W - W_hat)^T)
  double relative_loss = 0;  // loss / tr(W H W^T)
  // The same loss after plain rounding on the grid the method's search picks for the original
  // weights: what the method saved.
  double rtn_loss = 0;
  double rtn_relative_loss = 0;
  double seconds = 0;
};

struct QuantizeReport {
  double perplexity_fp = -1;     // -1: not evaluated
  double perplexity_quant = -1;
  double seconds = 0;            // whole job
  double forward_seconds = 0;    // block forwards on calibration data
  double statistics_seconds = 0; // Hessian accumulation
  double quantize_seconds = 0;   // the quantizers
  double collective_seconds = 0; // all-reducing statistics across the worker group
  uint64_t collective_bytes = 0; // bytes this rank handed to collectives
  int workers = 1;
  int64_t resumed_blocks = 0;    // blocks reloaded from an earlier run of this job
  double eval_seconds = 0;
  // Peak bytes of block-stage outputs kept so each slot's forward continues from the stage before
  // (core/pipeline/block_stream.h; at most --forward-cache-mib).
  int64_t forward_cache_bytes = 0;
  double write_seconds = 0;
  std::vector<double> block_seconds;
  std::vector<LayerReport> layers;
  std::string out_dir;
  // Which runtimes load the checkpoint, with which kernels (core/checkpoint/serving_support.h), as JSON.
  std::string serving_json;
};

absl::StatusOr<QuantizeReport> RunQuantize(const QuantizeOptions& options,
                                           const JobHooks& hooks = {});

}  // namespace ptq
