// The options of a quantization job, defined once. `VisitQuantizeOptions` lists every option a user
// sets with its names: the `ptq quantize`/`ptq submit` flags (client/quantize_flags.h), the API's
// JobSpec fields (worker/quantize_spec.h, by protobuf reflection on these names) and the checkpoint's
// record of them (CheckpointOptionsJson) all derive from that one list, so a new option is a member
// here, a row in the visitor and a JobSpec field. No LibTorch: the control plane uses this header.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json_fwd.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/model_config.h"
#include "core/quant/gptq_options.h"
#include "core/stats/qk_hessian.h"

namespace ptq {

struct QuantizeOptions;

enum class Method { kRtn, kGptq, kBoa, kTurboBoa };
// "rtn" | "gptq" | "boa" | "turboboa"; InvalidArgument naming the supported ones otherwise.
absl::StatusOr<Method> ParseMethod(std::string_view name);
std::string_view MethodName(Method method);

// The checkpoint's on-disk format (docs/serving.md says which runtime loads which). kAuto is only an
// option value: ResolveCheckpointFormat turns it into one of the others before any work.
enum class CheckpointFormat { kAuto, kGptq, kCompressedTensors, kDequantized };

// "cpu" -> -1, "cuda" -> 0, "cuda:N" -> N; InvalidArgument otherwise. Whether the device exists is
// checked where LibTorch is (core/pipeline/device.h).
absl::StatusOr<int> ParseDeviceName(std::string_view name);
// "auto" | "gptq" | "compressed-tensors" | "dequantized"; InvalidArgument naming them otherwise.
absl::StatusOr<CheckpointFormat> ParseCheckpointFormat(std::string_view name);
std::string_view CheckpointFormatName(CheckpointFormat format);
// The format a job writes: `--format auto` is GPTQ for 4/8-bit symmetric grids (what vLLM's GPTQ
// Marlin/Machete path takes), otherwise compressed-tensors pack-quantized (vLLM's WNA16 path: zero
// points at 4/8 bits, 2/3 bits through Humming), except that a shorter last group (--partial-groups),
// which compressed-tensors cannot express, stays GPTQ. Never returns kAuto. REQUIRES: the format
// and bits parse.
CheckpointFormat ResolveCheckpointFormat(const QuantizeOptions& options);

struct QuantizeOptions {
  std::string model_dir;
  std::string calib_path;
  std::string out_dir;
  std::string eval_path;  // empty: no perplexity
  bool eval_fp = true;    // also measure the full-precision model (before quantizing)
  // rtn | gptq | boa | turboboa. TurboBoA with two-stage scales is the best we measured at every
  // width (docs/results.md, "Defaults"); GPTQ with the same scales ties it at W2 and W4.
  std::string method = "turboboa";
  // BoA / TurboBoA: q_proj and k_proj rows quantized `joint_rows` at a time with out-channel
  // compensation through their heads' H_out (boa forces 1); v, o and the MLP use GPTQ.
  int64_t joint_rows = 16;
  // Correction for the error earlier quantized layers pass on (TurboBoA feature 2): each layer's
  // target is W X_f (full-precision inputs) instead of W X_q, with the cross term scaled by alpha.
  // Negative: the method's default (turboboa 0.25, otherwise 0 = off). Costs a second block forward
  // on the full-precision stream.
  double residual_alpha = -1;
  // The residual correction's full-precision stream and cross term on every N-th calibration batch
  // (of batch_windows windows) instead of all: the second stream's forward and statistics cost 1/N.
  // 0: the default (kDefaultResidualEvery with the correction on).
  int64_t residual_every = 0;
  // BoA / TurboBoA: W_v quantized per key/value head with the covariance of the attention-weighted
  // inputs (one hidden x hidden matrix per head); false: W_v uses the shared H_in. Off by default:
  // with two-stage scales the shared H_in measured better (W3: 2.9253 against 2.9356) and costs
  // less memory.
  bool value_block = false;
  // Damping of the value-block Hessians, as a fraction of each one's mean diagonal; negative: the
  // same as gptq.damp. Attention-weighted inputs are averages over many positions, so their
  // covariance is far more concentrated than H_in's (a test of whether 1 % is too little there).
  double value_damp = -1;
  // BoA / TurboBoA: quantize each head's q/k rows by decreasing diag(H_out) (BoaOptions).
  bool act_order_rows = false;
  // BoA / TurboBoA: which attention-score error H_out of q_proj/k_proj measures (core/stats/qk_hessian.h).
  std::string qk_hessian = "moment";
  // Statistics of each slot taken on the block whose earlier layers are already quantized (true, the
  // standard "true sequential" order: Q/K/V, then O on their quantized outputs, then the MLP), or all
  // on the full-precision block as the authors' TurboBoA code does (false, --no-sequential). The
  // block input is the partly quantized model's in both cases.
  bool sequential = true;
  // Two-stage group scales, stage 2: coordinate-descent sweeps over the scales once the integers are
  // fixed (0: off). Negative: the method's default, kDefaultRefineIters with a Hessian, 0 for rtn.
  int refine_iters = -1;
  // Alternation of the integers and the scales: after stage 2, quantize each layer again on the
  // refined grids (the integers adapt to the scales) and refine again, this many extra times; each
  // head or row chunk keeps the pass with its lowest loss. Needs refine_iters > 0.
  int requant_passes = 0;
  // Two-stage group scales, stage 1: "minmax", or "hessian": each group's scale searched (range
  // shrink as --mse) to minimise its diag(H_in)-weighted error, or "hessian-block". Empty: the
  // method's default, "hessian" with a Hessian, "minmax" for rtn.
  std::string scale_init;
  // gptq: the packed GPTQ checkpoint (classic zero - 1 storage); compressed-tensors: llm-compressor's
  // pack-quantized layout; dequantized: an ordinary float32 model holding the quantized values;
  // auto: whichever of the first two a fast kernel loads (ResolveCheckpointFormat).
  std::string format = "auto";
  // Largest safetensors shard of a gptq or compressed-tensors checkpoint; bigger models are split
  // into model-0000x-of-0000y.safetensors with an index, as Hugging Face writes them.
  int64_t max_shard_mib = 4096;
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
  // Memory (MiB, on the device) for the block-stage outputs kept between one slot's statistics and
  // the next (core/pipeline/block_stream.h); a stage that does not fit is recomputed. 0: keep none.
  // A setting of this process (no JobSpec field): it changes the time, never the checkpoint.
  int64_t forward_cache_mib = 4096;
  // Where the forward, statistics and quantizers run: "cpu", "cuda" or "cuda:N". Not part of the
  // job sent to a coordinator: a worker runs on its own device (ptq-worker --device).
  std::string device = "cpu";
  // Not a job option (no flag, no JobSpec field): the caller's choice. Save each finished block next
  // to the output (core/checkpoint/block_store.h) and resume from them: a run of the same job after
  // a crash, a kill or a lost worker redoes only the unfinished blocks.
  bool keep_blocks = true;
};

// How one option is named outside the struct.
struct OptionField {
  std::string_view name;        // the JobSpec field (snake_case); empty: a setting of this process only
  std::string_view flag;        // the command-line flag; empty: none (API only)
  std::string_view help;
  std::string_view checkpoint;  // its key in the checkpoint's record (CheckpointOptionsJson); empty: not recorded
  // The flag and the JobSpec field say the opposite of the member (--no-value-block sets
  // value_block = false), so that an unset field means the default.
  bool negated = false;
  bool required = false;
  bool show_default = true;  // false where the help says what an unset value means
};

// Calls visit(const OptionField&, member&) for every job option, in the order `--help` lists them.
// O is QuantizeOptions or const QuantizeOptions.
template <typename O, typename Visitor>
void VisitQuantizeOptions(O& o, Visitor&& visit) {
  visit(OptionField{"model_path", "--model", "Hugging Face model folder", {}, false, true}, o.model_dir);
  visit(OptionField{"calib_path", "--calib", "calibration text (or .ids token file)", {}, false, true},
        o.calib_path);
  visit(OptionField{"output_path", "--out", "output folder", {}, false, true}, o.out_dir);
  visit(OptionField{"method", "--method",
                    "rtn, gptq, boa or turboboa (default turboboa with two-stage scales: the best "
                    "we measured at every width)",
                    "method", false, false, false},
        o.method);
  visit(OptionField{"joint_rows", "--joint-rows",
                    "turboboa: out-channels of a head quantized jointly (boa: 1)", "joint_rows"},
        o.joint_rows);
  visit(OptionField{"residual_alpha", "--residual-alpha",
                    "correct for the error earlier quantized layers pass on, 0 (off) to 1 "
                    "(default: 0.25 for turboboa, 0 otherwise)",
                    "residual_alpha", false, false, false},
        o.residual_alpha);
  visit(OptionField{"residual_every", "--residual-every",
                    "the residual correction's full-precision stream on every N-th calibration "
                    "batch only (default 1: all)",
                    "residual_every", false, false, false},
        o.residual_every);
  visit(OptionField{"value_block", "--value-block",
                    "boa/turboboa: W_v with per-head attention-weighted Hessians (BoA's value block; "
                    "a hidden x hidden matrix per kv head) instead of the shared input Hessian, "
                    "which measured better with two-stage scales",
                    "value_block"},
        o.value_block);
  visit(OptionField{"value_damp", "--value-damp",
                    "boa/turboboa: damping of the value-block Hessians as a fraction of their "
                    "mean diagonal (default: --damp)",
                    "value_damp", false, false, false},
        o.value_damp);
  visit(OptionField{"act_order_rows", "--act-order-rows",
                    "boa/turboboa: quantize each head's q/k rows by decreasing diag(H_out) (the "
                    "TurboBoA reference's act_order_row; the checkpoint's layout is unchanged)",
                    "act_order_rows"},
        o.act_order_rows);
  visit(OptionField{"no_sequential", "--no-sequential",
                    "take every layer's statistics from the full-precision block (as the TurboBoA "
                    "reference code does) instead of quantizing Q/K/V, O and the MLP in order",
                    "sequential", true},
        o.sequential);
  visit(OptionField{"qk_hessian", "--qk-hessian",
                    "boa/turboboa: the score error q_proj/k_proj's out-channel compensation "
                    "weighs: moment (BoA's), covariance (q: key covariance) or softmax (through "
                    "each query's softmax Jacobian)",
                    "qk_hessian"},
        o.qk_hessian);
  visit(OptionField{"refine_iters", "--refine-iters",
                    "coordinate-descent sweeps refining group scales after quantization, two-stage "
                    "scales' stage 2 (default 2, rtn 0; 0: off, as classic GPTQ)",
                    "refine_iters", false, false, false},
        o.refine_iters);
  visit(OptionField{"requant_passes", "--requant-passes",
                    "after refining, quantize again on the refined scales this many times; each "
                    "head or row chunk keeps its lowest-loss pass (needs --refine-iters)",
                    "requant_passes"},
        o.requant_passes);
  visit(OptionField{"scale_init", "--scale-init",
                    "group scales before quantizing: minmax (classic GPTQ), hessian (diag(H)-weighted "
                    "search, two-stage scales' stage 1; the default, rtn: minmax) or hessian-block "
                    "(the group's full H block)",
                    "scale_init", false, false, false},
        o.scale_init);
  visit(OptionField{"bits", "--bits", "2, 3, 4 or 8", "bits"}, o.gptq.grid.bits);
  visit(OptionField{"format", "--format",
                    "auto (gptq for 4/8-bit --sym, else compressed-tensors), gptq, "
                    "compressed-tensors (pack-quantized) or dequantized (float32)", "format"},
        o.format);
  visit(OptionField{{}, "--max-shard-mib", "largest checkpoint shard in MiB (gptq, compressed-tensors)"},
        o.max_shard_mib);
  visit(OptionField{"group_size", "--group-size", "columns per group; -1 per channel", "group_size"},
        o.gptq.group_size);
  visit(OptionField{"sym", "--sym", "symmetric grid (zero point 2^(b-1))", "sym"}, o.gptq.grid.sym);
  visit(OptionField{"mse_grid", "--mse", "search the grid range (GPTQ's MSE grid)", "mse_grid"},
        o.gptq.grid.mse);
  visit(OptionField{"act_order", "--act-order", "quantize columns by decreasing H_ii", "act_order"},
        o.gptq.act_order);
  visit(OptionField{"static_groups", "--static-groups", "group grids fixed before GPTQ", "static_groups"},
        o.gptq.static_groups);
  visit(OptionField{"damp", "--damp", "damping fraction of mean(diag H)", "damp_percent"}, o.gptq.damp);
  visit(OptionField{"samples", "--samples", "calibration windows", "samples"}, o.samples);
  visit(OptionField{"seq_len", "--seq-len", "tokens per calibration window", "seq_len"}, o.seq_len);
  visit(OptionField{"seed", "--seed", "seed of the calibration sampling", "seed"}, o.seed);
  visit(OptionField{"batch_windows", {}, "calibration windows per forward call"}, o.batch_windows);
  visit(OptionField{{}, "--device",
                    "cpu, cuda or cuda:N: where the forward, statistics and quantizers run (weights "
                    "stream to it block by block)"},
        o.device);
  visit(OptionField{{}, "--forward-cache-mib",
                    "memory for block-stage outputs kept so each layer's statistics continue from "
                    "the stage before instead of rerunning the block (0: none; results are the same)"},
        o.forward_cache_mib);
  visit(OptionField{"eval_path", "--eval", "text to measure perplexity on, before and after"},
        o.eval_path);
  visit(OptionField{"eval_seq_len", "--eval-seq-len", "evaluation window (default: --seq-len)", {},
                    false, false, false},
        o.eval_seq_len);
  visit(OptionField{"eval_max_windows", "--eval-windows", "evaluate at most this many windows", {},
                    false, false, false},
        o.eval_max_windows);
  visit(OptionField{"skip_fp_eval", "--skip-fp-eval",
                    "with --eval, measure only the quantized model (the full-precision one is known)",
                    {}, true},
        o.eval_fp);
  visit(OptionField{"force", "--force", "replace a model already in --out"}, o.force);
  visit(OptionField{"partial_groups", "--partial-groups",
                    "allow a shorter last group where --group-size does not divide a layer",
                    "partial_groups"},
        o.partial_groups);
}

// Limits a request cannot exceed, so one job cannot exhaust a worker's memory or time before it
// starts: calibration tokens (samples x seq_len; 32 M, 128x the usual 128 x 2048), the tokens of one
// window (calibration or evaluation), scale-refinement sweeps and requantization passes (each
// costs about one GPTQ pass).
inline constexpr int64_t kMaxCalibrationTokens = int64_t{1} << 25;
inline constexpr int64_t kMaxSequenceLength = int64_t{1} << 20;
inline constexpr int kMaxRefineIters = 64;
// Stage-2 sweeps of the two-stage scales when --refine-iters is unset: two measured as good as four
// (docs/results.md) at half the cost.
inline constexpr int kDefaultRefineIters = 2;
inline constexpr int64_t kDefaultResidualEvery = 1;
inline constexpr int kMaxRequantPasses = 8;

// Checks options against the model: method, bits, group size dividing every layer's input size,
// finite damping and residual alpha, and the limits above.
absl::Status ValidateQuantizeOptions(const QuantizeOptions& options, const ModelConfig& config);

// The options with every method default applied and every setting the method ignores neutral
// (boa's joint rows 1, the effective residual alpha, value_damp -1 without the value block, ...):
// what the job runs and the checkpoint records. REQUIRES: the options are valid.
QuantizeOptions ResolveQuantizeOptions(const QuantizeOptions& options);

// The options that decide a checkpoint's contents, as written into it (`ptq` key of the
// quantization_config) and printed by `ptq quantize --json`: the visitor's checkpoint rows of the
// resolved options. REQUIRES: the options are valid.
nlohmann::json CheckpointOptionsJson(const QuantizeOptions& options);

}  // namespace ptq
