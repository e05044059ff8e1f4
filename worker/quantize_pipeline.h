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

#include <nlohmann/json_fwd.hpp>

#include "absl/status/statusor.h"
#include "common/model_config.h"
#include "worker/gptq_quantizer.h"

namespace ptq::worker {

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
};

// Optional hooks for a caller that runs the pipeline as a job. Not part of the checkpoint's options.
struct JobHooks {
  std::function<void(const LayerProgress&)> on_layer;
  // Called after block `block` is finished (its quantized tensors are in the sink).
  std::function<void(int64_t block, int64_t num_blocks)> on_block;
  // Checked between layers; when set the run stops with CANCELLED and leaves no checkpoint.
  const std::atomic<bool>* cancel = nullptr;
  // The worker group this process belongs to (nullptr: quantize alone). Every rank calls RunQuantize
  // with the same options; each runs the forwards of its share of the calibration batches and
  // quantizes its share of every layer's rows; rank 0 writes the checkpoint and evaluates.
  Collective* group = nullptr;
  // Labels this run's metrics (job_id); the service passes its job id.
  std::string job_id = "local";
};

struct QuantizeOptions {
  std::string model_dir;
  std::string calib_path;
  std::string out_dir;
  std::string eval_path;  // empty: no perplexity
  bool eval_fp = true;    // also measure the full-precision model (before quantizing)
  std::string method = "gptq";  // rtn | gptq | boa | turboboa
  // BoA / TurboBoA: q_proj and k_proj rows quantized `joint_rows` at a time with out-channel
  // compensation through their heads' H_out (boa forces 1); v, o and the MLP use GPTQ.
  int64_t joint_rows = 16;
  // Correction for the error earlier quantized layers pass on (TurboBoA feature 2): each layer's
  // target is W X_f (full-precision inputs) instead of W X_q, with the cross term scaled by alpha.
  // Negative: the method's default (turboboa 0.25, otherwise 0 = off). Costs a second block forward
  // on the full-precision stream.
  double residual_alpha = -1;
  // BoA / TurboBoA: W_v quantized per key/value head with the covariance of the attention-weighted
  // inputs (one hidden x hidden matrix per head); false: W_v uses the shared H_in (less memory).
  bool value_block = true;
  // Damping of the value-block Hessians, as a fraction of each one's mean diagonal; negative: the
  // same as gptq.damp. Attention-weighted inputs are averages over many positions, so their
  // covariance is far more concentrated than H_in's (a test of whether 1 % is too little there).
  double value_damp = -1;
  // BoA / TurboBoA: quantize each head's q/k rows by decreasing diag(H_out) (BoaOptions).
  bool act_order_rows = false;
  // BoA / TurboBoA: which attention-score error H_out of q_proj/k_proj measures: "moment" (BoA's
  // key/query second moments), "covariance" (q's from the key covariance: softmax ignores a shift
  // of all of a query's scores) or "softmax" (score errors through each query's softmax Jacobian,
  // from the attention probabilities). worker/attention_statistics.h has the details.
  std::string qk_hessian = "moment";
  // Statistics of each slot taken on the block whose earlier layers are already quantized (true, the
  // standard "true sequential" order: Q/K/V, then O on their quantized outputs, then the MLP), or all
  // on the full-precision block as the authors' TurboBoA code does (false, --no-sequential). The
  // block input is the partly quantized model's in both cases.
  bool sequential = true;
  // Two-stage group scales, stage 2: coordinate-descent sweeps over the scales once the integers are
  // fixed (0: off). Applies to every method except rtn.
  int refine_iters = 0;
  // Alternation of the integers and the scales: after stage 2, quantize each layer again on the
  // refined grids (the integers adapt to the scales) and refine again, this many extra times; each
  // head or row chunk keeps the pass with its lowest loss. Needs refine_iters > 0.
  int requant_passes = 0;
  // Two-stage group scales, stage 1: "minmax" (default), or "hessian": each group's scale searched
  // (range shrink as --mse) to minimise its diag(H_in)-weighted error. Not for rtn.
  std::string scale_init = "minmax";
  // gptq: the packed GPTQ checkpoint vLLM and transformers load (classic zero - 1 storage);
  // dequantized: an ordinary float32 model holding the quantized values.
  std::string format = "gptq";
  GptqOptions gptq;  // grid (bits, sym, mse), group size, act-order, damping
  int64_t samples = 128;
  int64_t seq_len = 256;
  int64_t eval_seq_len = 0;  // 0: seq_len
  int64_t eval_max_windows = 0;  // 0: the whole text
  uint64_t seed = 0;
  bool force = false;
  // Allow a shorter last group where group_size does not divide a layer's input size (as GPTQ's
  // reference code does). vLLM's and ExLlama's kernels reject such checkpoints, so it is opt-in.
  bool partial_groups = false;
  int64_t batch_windows = 8;  // calibration windows per forward call
  // Save each finished block next to the output (worker/block_store.h) and resume from them: a run
  // of the same job after a crash, a kill or a lost worker redoes only the unfinished blocks.
  bool keep_blocks = true;
};

struct LayerReport {
  std::string name;
  double loss = 0;           // tr((W - W_hat) H (W - W_hat)^T)
  double relative_loss = 0;  // loss / tr(W H W^T)
  double rtn_loss = 0;       // the same loss after plain rounding on the same grid: what the method saved
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
  double write_seconds = 0;
  std::vector<double> block_seconds;
  std::vector<LayerReport> layers;
  std::string out_dir;
};

// residual_alpha with the method's default applied.
double EffectiveResidualAlpha(const QuantizeOptions& options);
// value_damp with its default (gptq.damp) applied.
double EffectiveValueDamp(const QuantizeOptions& options);

// The options that decide a checkpoint's contents, as written into it (`ptq` key of the
// quantization_config) and printed by `ptq quantize --json`.
nlohmann::json OptionsJson(const QuantizeOptions& options);

// Limits a request cannot exceed, so one job cannot exhaust a worker's memory or time before it
// starts: calibration tokens (samples x seq_len; 32 M, 128x the usual 128 x 2048), the tokens of one
// window (calibration or evaluation), scale-refinement sweeps and requantization passes (each
// costs about one GPTQ pass).
inline constexpr int64_t kMaxCalibrationTokens = int64_t{1} << 25;
inline constexpr int64_t kMaxSequenceLength = int64_t{1} << 20;
inline constexpr int kMaxRefineIters = 64;
inline constexpr int kMaxRequantPasses = 8;

// Checks options against the model: method, bits, group size dividing every layer's input size,
// finite damping and residual alpha, and the limits above.
absl::Status ValidateQuantizeOptions(const QuantizeOptions& options, const ModelConfig& config);

absl::StatusOr<QuantizeReport> RunQuantize(const QuantizeOptions& options,
                                           const JobHooks& hooks = {});

}  // namespace ptq::worker
