#include "worker/quantize_pipeline.h"

#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <numeric>
#include <map>
#include <optional>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/model_files.h"
#include "common/model_fingerprint.h"
#include "common/status_macros.h"
#include "common/tokenizer.h"
#include "nlohmann/json.hpp"
#include "worker/attention_statistics.h"
#include "worker/collective.h"
#include "worker/block_store.h"
#include "worker/calibration.h"
#include "worker/checkpoint_size.h"
#include "worker/dequantized_checkpoint.h"
#include "worker/gptq_checkpoint_writer.h"
#include "worker/hessian_accumulator.h"
#include "worker/llama_block.h"
#include "worker/layer_report.h"
#include "worker/layer_shard.h"
#include "worker/llama_model.h"
#include "worker/output_folder.h"
#include "worker/perplexity.h"
#include "worker/pipeline_metrics.h"
#include "worker/progress.h"
#include "worker/residual_correction.h"
#include "worker/value_statistics.h"

namespace ptq::worker {
namespace {

using Clock = std::chrono::steady_clock;
double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

constexpr LinearSlot kSlotOrder[] = {LinearSlot::kAttnIn, LinearSlot::kAttnOut, LinearSlot::kMlpIn,
                                     LinearSlot::kMlpHidden};

// Feeds one slot's inputs into a Hessian accumulator and times the accumulation apart from the forward.
class SlotStatistics final : public BlockObserver {
 public:
  SlotStatistics(LinearSlot slot, int64_t dim) : slot_(slot), hessian_(dim) {}
  void OnLinearInput(LinearSlot slot, const at::Tensor& x) override {
    if (slot != slot_) return;
    auto t = Clock::now();
    hessian_.Add(x);
    seconds_ += Since(t);
  }
  HessianAccumulator& hessian() { return hessian_; }
  double seconds() const { return seconds_; }

 private:
  LinearSlot slot_;
  HessianAccumulator hessian_;
  double seconds_ = 0;
};

// Sends one forward's observations to several observers, in order.
class ObserverList final : public BlockObserver {
 public:
  explicit ObserverList(std::vector<BlockObserver*> observers) : observers_(std::move(observers)) {}
  void OnLinearInput(LinearSlot slot, const at::Tensor& x) override {
    for (BlockObserver* o : observers_) o->OnLinearInput(slot, x);
  }
  void OnAttention(const AttentionInternals& in) override {
    for (BlockObserver* o : observers_) o->OnAttention(in);
  }

 private:
  std::vector<BlockObserver*> observers_;
};

// Keeps one slot's input of a forward (the full-precision side of the residual cross term).
class SlotCapture final : public BlockObserver {
 public:
  explicit SlotCapture(LinearSlot slot) : slot_(slot) {}
  void OnLinearInput(LinearSlot slot, const at::Tensor& x) override {
    if (slot == slot_) x_ = x;
  }
  const at::Tensor& x() const { return x_; }

 private:
  LinearSlot slot_;
  at::Tensor x_;
};

// Adds (x_f - x_q) x_q^T for one slot, x_f captured from the full-precision forward of the same batch.
class CrossObserver final : public BlockObserver {
 public:
  CrossObserver(LinearSlot slot, const at::Tensor& x_fp, CrossTermAccumulator* cross)
      : slot_(slot), x_fp_(x_fp), cross_(cross) {}
  void OnLinearInput(LinearSlot slot, const at::Tensor& x) override {
    if (slot != slot_) return;
    auto t = Clock::now();
    cross_->Add(x_fp_, x);
    seconds += Since(t);
  }
  double seconds = 0;

 private:
  LinearSlot slot_;
  const at::Tensor& x_fp_;
  CrossTermAccumulator* cross_;
};

int64_t SlotInputDim(LinearSlot slot, const ModelConfig& c) {
  switch (slot) {
    case LinearSlot::kAttnIn:
    case LinearSlot::kMlpIn: return c.hidden_size;
    case LinearSlot::kAttnOut: return c.num_attention_heads * c.head_dim;
    case LinearSlot::kMlpHidden: return c.intermediate_size;
  }
  return 0;
}

// Runs the block over all calibration windows in batches. With an observer and a stop slot it only
// feeds statistics; otherwise it overwrites `hidden` with the block output.
void ForwardAll(at::Tensor& hidden, const BlockWeights& w, const ModelConfig& c,
                const RopeTable& rope, int64_t batch, BlockObserver* observer,
                std::optional<LinearSlot> stop_after) {
  const int64_t n = hidden.size(0);
  for (int64_t b0 = 0; b0 < n; b0 += batch) {
    const int64_t bn = std::min(batch, n - b0);
    at::Tensor out = BlockForward(hidden.narrow(0, b0, bn), w, c, rope, observer, stop_after);
    if (!stop_after.has_value()) hidden.narrow(0, b0, bn).copy_(out);
  }
}

// Feeds statistics for `slot` over all calibration windows (stopping after `stop`). With a
// full-precision stream it also runs each batch through the full-precision block and adds the
// residual cross term; returns the seconds spent accumulating it.
double ForwardStatistics(const at::Tensor& hidden, const BlockWeights& w, const at::Tensor* hidden_fp,
                         const BlockWeights& w_fp, const ModelConfig& c, const RopeTable& rope,
                         int64_t batch, BlockObserver* observer, LinearSlot slot, LinearSlot stop,
                         CrossTermAccumulator* cross) {
  const int64_t n = hidden.size(0);
  double cross_seconds = 0;
  for (int64_t b0 = 0; b0 < n; b0 += batch) {
    const int64_t bn = std::min(batch, n - b0);
    if (hidden_fp == nullptr) {
      BlockForward(hidden.narrow(0, b0, bn), w, c, rope, observer, stop);
      continue;
    }
    SlotCapture capture(slot);
    BlockForward(hidden_fp->narrow(0, b0, bn), w_fp, c, rope, &capture, slot);
    CrossObserver cross_observer(slot, capture.x(), cross);
    ObserverList both({observer, &cross_observer});
    BlockForward(hidden.narrow(0, b0, bn), w, c, rope, &both, stop);
    cross_seconds += cross_observer.seconds;
  }
  return cross_seconds;
}

// Adds the statistics of every rank's token shard (ExactSum limbs and counts: the sum is the
// one-process sum bit for bit).
absl::Status AllReduceStatistics(Collective& group, HessianAccumulator& hessian,
                                 AttentionStatistics* attention, ValueStatistics* values,
                                 CrossTermAccumulator* cross) {
  if (group.size() == 1) return absl::OkStatus();
  std::vector<ExactSum*> sums = {&hessian.sum()};
  std::vector<int64_t*> counts = {&hessian.count()};
  if (attention != nullptr) {
    for (ExactSum* s : attention->sums()) sums.push_back(s);
    counts.push_back(&attention->tokens());
  }
  if (values != nullptr) {
    // One hidden x hidden matrix per kv head, read only by the rank that quantizes that head's v
    // rows (worker/layer_shard.h): each rank receives the sums of its own heads.
    ExactSum& v = values->sum();
    const int64_t kv_heads = v.high().size(0);
    std::vector<int64_t> heads_per_rank;
    for (int r = 0; r < group.size(); ++r) {
      auto [first, last] = UnitsOfRank(static_cast<size_t>(kv_heads), r, group.size());
      heads_per_rank.push_back(static_cast<int64_t>(last - first));
    }
    PTQ_RETURN_IF_ERROR(group.ReduceScatterRows(v.high(), heads_per_rank));
    PTQ_RETURN_IF_ERROR(group.ReduceScatterRows(v.low(), heads_per_rank));
    counts.push_back(&v.non_finite());
    counts.push_back(&values->count());
  }
  if (cross != nullptr) {
    sums.push_back(&cross->sum());
    counts.push_back(&cross->count());
  }
  for (ExactSum* sum : sums) {
    PTQ_RETURN_IF_ERROR(group.AllReduceSum(sum->high()));
    PTQ_RETURN_IF_ERROR(group.AllReduceSum(sum->low()));
    counts.push_back(&sum->non_finite());
  }
  at::Tensor scalars = at::empty({static_cast<int64_t>(counts.size())}, at::kLong);
  for (size_t i = 0; i < counts.size(); ++i) scalars[i] = *counts[i];
  PTQ_RETURN_IF_ERROR(group.AllReduceSum(scalars));
  for (size_t i = 0; i < counts.size(); ++i) *counts[i] = scalars[i].item<int64_t>();
  return absl::OkStatus();
}

// Block `layer`'s saved layers, or an error naming what is wrong with them: each of the block's
// linear layers must be there exactly once (a block saved without them must not resume as done).
absl::StatusOr<std::vector<StoredLayer>> LoadCompleteBlock(const BlockStore& store, int64_t layer) {
  PTQ_ASSIGN_OR_RETURN(std::vector<StoredLayer> stored, store.Load(layer));
  std::set<std::string> names;
  for (const StoredLayer& l : stored) names.insert(l.name);
  for (LinearKind k : kAllLinears) {
    if (!names.count(LinearWeightName(layer, k))) {
      return absl::DataLossError(absl::StrFormat("%s: block %d lacks %s", store.dir(), layer,
                                                 LinearWeightName(layer, k)));
    }
  }
  if (names.size() != stored.size() || stored.size() != kAllLinears.size()) {
    return absl::DataLossError(absl::StrFormat("%s: block %d holds %d layers, not %d", store.dir(),
                                               layer, stored.size(), kAllLinears.size()));
  }
  return stored;
}

// What identifies a job's finished blocks: every option that changes them, the model and the
// calibration text (by size and a hash of its first megabyte).
absl::StatusOr<std::string> JobKey(const QuantizeOptions& o) {
  PTQ_ASSIGN_OR_RETURN(std::string model, ModelFingerprint(o.model_dir));
  std::string calib;
  {
    std::ifstream in(o.calib_path, std::ios::binary);
    calib.resize(1 << 20);
    in.read(calib.data(), static_cast<std::streamsize>(calib.size()));
    calib.resize(static_cast<size_t>(in.gcount()));
  }
  std::error_code ec;
  const uint64_t calib_size = std::filesystem::file_size(o.calib_path, ec);
  const std::string text = absl::StrCat(OptionsJson(o).dump(), "|batch ", o.batch_windows, "|model ",
                                        model, "|calib ", calib_size, " ",
                                        std::hash<std::string>{}(calib));
  return absl::StrFormat("%016x", std::hash<std::string>{}(text));
}

absl::StatusOr<double> Perplexity(const std::string& model_dir, const QuantizeOptions& o,
                                  const std::string& label) {
  PTQ_ASSIGN_OR_RETURN(auto model, LlamaModel::Open(model_dir));
  PTQ_ASSIGN_OR_RETURN(auto tokenizer, TokenizerForModel(model_dir, model->config().vocab_size));
  PTQ_ASSIGN_OR_RETURN(auto tokens, LoadTokens(o.eval_path, *tokenizer, model->config().vocab_size));
  PerplexityOptions po;
  po.seq_len = o.eval_seq_len > 0 ? o.eval_seq_len : o.seq_len;
  po.max_windows = o.eval_max_windows;
  std::optional<Progress> progress;  // sized by the evaluator's own count (blocks x window chunks)
  po.on_progress = [&](int64_t done, int64_t total) {
    if (!progress) progress.emplace(absl::StrCat("eval ", label), total);
    progress->Advance(1, absl::StrCat("step ", done, "/", total));
  };
  PTQ_ASSIGN_OR_RETURN(PerplexityResult r, EvaluatePerplexity(*model, tokens, po));
  spdlog::info("perplexity ({}) = {:.4f} over {} windows of {}", label, r.perplexity, r.windows,
               po.seq_len);
  return r.perplexity;
}

}  // namespace

nlohmann::json OptionsJson(const QuantizeOptions& o) {
  return {{"method", o.method},
          {"format", o.format},
          {"joint_rows", o.method == "boa" ? 1 : o.joint_rows},
          {"refine_iters", o.refine_iters},
          {"requant_passes", o.requant_passes},
          {"scale_init", o.scale_init},
          {"residual_alpha", EffectiveResidualAlpha(o)},
          {"value_block", (o.method == "boa" || o.method == "turboboa") && o.value_block},
          {"qk_hessian", o.method == "boa" || o.method == "turboboa" ? o.qk_hessian : ""},
          {"value_damp", (o.method == "boa" || o.method == "turboboa") && o.value_block
                             ? EffectiveValueDamp(o) : -1.0},
          {"act_order_rows", (o.method == "boa" || o.method == "turboboa") && o.act_order_rows},
          {"sequential", o.sequential},
          {"bits", o.gptq.grid.bits},
          {"group_size", o.gptq.group_size},
          {"sym", o.gptq.grid.sym},
          {"mse_grid", o.gptq.grid.mse},
          {"act_order", o.gptq.act_order},
          {"static_groups", o.gptq.static_groups},
          {"damp_percent", o.gptq.damp},
          {"samples", o.samples},
          {"seq_len", o.seq_len},
          {"seed", o.seed},
          {"partial_groups", o.partial_groups}};
}

double EffectiveResidualAlpha(const QuantizeOptions& o) {
  if (o.residual_alpha >= 0) return o.residual_alpha;
  return o.method == "turboboa" ? 0.25 : 0.0;
}

double EffectiveValueDamp(const QuantizeOptions& o) {
  return o.value_damp >= 0 ? o.value_damp : o.gptq.damp;
}

absl::Status ValidateQuantizeOptions(const QuantizeOptions& o, const ModelConfig& c) {
  if (o.method != "rtn" && o.method != "gptq" && o.method != "boa" && o.method != "turboboa") {
    return absl::InvalidArgumentError(absl::StrCat("unknown method \"", o.method,
                                                   "\" (supported: rtn, gptq, boa, turboboa)"));
  }
  if (o.joint_rows < 1 || (o.method == "turboboa" && c.head_dim % o.joint_rows != 0)) {
    return absl::InvalidArgumentError(absl::StrCat("--joint-rows ", o.joint_rows,
                                                   " must be positive and divide head_dim ", c.head_dim));
  }
  if (o.refine_iters < 0 || o.refine_iters > kMaxRefineIters) {
    return absl::InvalidArgumentError(
        absl::StrCat("--refine-iters must be between 0 and ", kMaxRefineIters));
  }
  if (o.requant_passes < 0 || o.requant_passes > kMaxRequantPasses) {
    return absl::InvalidArgumentError(
        absl::StrCat("--requant-passes must be between 0 and ", kMaxRequantPasses));
  }
  if (o.requant_passes > 0 && o.refine_iters == 0) {
    return absl::InvalidArgumentError(
        "--requant-passes quantizes again on the refined scales: it needs --refine-iters > 0");
  }
  if (std::isnan(o.residual_alpha) || o.residual_alpha > 1) {
    return absl::InvalidArgumentError("--residual-alpha must be between 0 (off) and 1 (exact target)");
  }
  if (o.method == "rtn" && o.residual_alpha > 0) {
    return absl::InvalidArgumentError("--residual-alpha needs a Hessian (not rtn)");
  }
  if (o.scale_init != "minmax" && o.scale_init != "hessian" && o.scale_init != "hessian-block") {
    return absl::InvalidArgumentError(absl::StrCat("unknown --scale-init \"", o.scale_init,
                                                   "\" (supported: minmax, hessian, hessian-block)"));
  }
  if (o.scale_init == "hessian-block" && o.gptq.group_size <= 0) {
    // Per channel the "block" is the whole in x in Hessian: a d^T H d per candidate and row costs
    // in^2 (79 TFLOP per layer of a 7B MLP); the diagonal search is what per-channel grids use.
    return absl::InvalidArgumentError(
        "--scale-init hessian-block needs groups (--group-size > 0); use hessian per channel");
  }
  if (QkHessian qk; !ParseQkHessian(o.qk_hessian, &qk)) {
    return absl::InvalidArgumentError(absl::StrCat("unknown --qk-hessian \"", o.qk_hessian,
                                                   "\" (supported: moment, covariance, softmax)"));
  }
  if (o.method == "rtn" && (o.scale_init != "minmax" || o.refine_iters > 0)) {
    return absl::InvalidArgumentError("--scale-init hessian and --refine-iters need a Hessian (not rtn)");
  }
  const int bits = o.gptq.grid.bits;
  if (bits != 2 && bits != 3 && bits != 4 && bits != 8) {
    return absl::InvalidArgumentError(absl::StrCat("unsupported bits ", bits, " (use 2, 3, 4 or 8)"));
  }
  if (o.format != "gptq" && o.format != "dequantized") {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown format \"", o.format, "\" (supported: gptq, dequantized)"));
  }
  if (o.format == "gptq") {
    // Packed words must be whole: inputs pack into qweight, outputs into qzeros.
    const int64_t q_dim = c.num_attention_heads * c.head_dim;
    const int64_t kv_dim = c.num_key_value_heads * c.head_dim;
    for (int64_t dim : {c.hidden_size, q_dim, kv_dim, c.intermediate_size}) {
      if ((dim * bits) % 32 != 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "layer size ", dim, " cannot be packed at ", bits,
            " bits in the GPTQ format (needs a multiple of ", 32 / std::gcd(32, bits),
            "); use --format dequantized"));
      }
    }
  }
  if (o.samples <= 0 || o.seq_len <= 0) {
    return absl::InvalidArgumentError("--samples and --seq-len must be positive");
  }
  if (o.seq_len > kMaxSequenceLength || o.samples > kMaxCalibrationTokens / o.seq_len) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--samples ", o.samples, " x --seq-len ", o.seq_len, " exceeds the limit of ",
        kMaxCalibrationTokens, " calibration tokens (windows of at most ", kMaxSequenceLength, ")"));
  }
  if (o.batch_windows <= 0 || o.batch_windows > kMaxCalibrationTokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch_windows must be between 1 and ", kMaxCalibrationTokens));
  }
  if (o.eval_seq_len < 0 || o.eval_seq_len > kMaxSequenceLength || o.eval_max_windows < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--eval-seq-len must be between 0 and ", kMaxSequenceLength,
        " and --eval-windows non-negative (0: defaults)"));
  }
  if (!std::isfinite(o.gptq.damp) || o.gptq.damp < 0) {
    return absl::InvalidArgumentError("damping must be finite and non-negative");
  }
  if (!std::isfinite(o.value_damp)) {  // negative means "as --damp"
    return absl::InvalidArgumentError("--value-damp must be finite");
  }
  if (o.act_order_rows && o.method != "boa" && o.method != "turboboa") {
    return absl::InvalidArgumentError(
        "--act-order-rows orders q/k rows by their H_out: it needs --method boa or turboboa");
  }
  const int64_t g = o.gptq.group_size;
  if (g > 0) {
    for (int64_t dim : {c.hidden_size, c.num_attention_heads * c.head_dim, c.intermediate_size}) {
      if (dim % g != 0 && !o.partial_groups) {
        return absl::InvalidArgumentError(absl::StrCat(
            "group size ", g, " does not divide the input size ", dim,
            " of some linear layers (use --partial-groups for a shorter last group, which vLLM's "
            "kernels do not load, or a group size that divides it)"));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<QuantizeReport> RunQuantize(const QuantizeOptions& o, const JobHooks& hooks) {
  const auto job_start = Clock::now();
  QuantizeReport report;
  // The group this process quantizes with: rank 0 (the leader) writes the checkpoint and evaluates.
  std::unique_ptr<Collective> alone;
  Collective* group = hooks.group;
  if (group == nullptr) {
    alone = MakeSingleProcessCollective();
    group = alone.get();
  }
  const bool leader = group->rank() == 0;
  PTQ_ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(o.model_dir));
  PTQ_RETURN_IF_ERROR(ValidateQuantizeOptions(o, config));
  PTQ_ASSIGN_OR_RETURN(std::unique_ptr<ModelFiles> files_owned, ModelFiles::Open(o.model_dir));
  std::shared_ptr<const ModelFiles> files(std::move(files_owned));
  LlamaModel model(config, std::make_unique<SafetensorsWeightSource>(files));
  PTQ_ASSIGN_OR_RETURN(auto tokenizer, TokenizerForModel(o.model_dir, config.vocab_size));
  PTQ_ASSIGN_OR_RETURN(auto calib_tokens, LoadTokens(o.calib_path, *tokenizer, config.vocab_size));
  PTQ_ASSIGN_OR_RETURN(at::Tensor calib_ids,
                       SampleCalibrationWindows(calib_tokens, o.samples, o.seq_len, o.seed));
  if (!o.eval_path.empty()) {  // read the evaluation text now, so a bad path fails before the work
    PTQ_RETURN_IF_ERROR(LoadTokens(o.eval_path, *tokenizer, config.vocab_size).status());
  }
  std::optional<OutputFolder> output;
  if (leader) {
    PTQ_ASSIGN_OR_RETURN(OutputFolder prepared, OutputFolder::Prepare(o.out_dir, o.force));
    output.emplace(std::move(prepared));
    PTQ_ASSIGN_OR_RETURN(const uint64_t needed,
                         EstimateCheckpointBytes(o.model_dir, *files, config, o.gptq.grid.bits,
                                                 o.gptq.group_size, o.format == "dequantized"));
    // On this and every later error `output` removes its staging folder as it goes out of scope.
    PTQ_RETURN_IF_ERROR(output->CheckFreeSpace(needed));
    report.out_dir = output->final_dir();
  }
  PTQ_ASSIGN_OR_RETURN(std::string config_text, ReadFileToString(o.model_dir + "/config.json"));
  std::unique_ptr<CheckpointSink> sink;
  GptqOptions gptq_options = o.gptq;
  if (o.scale_init == "hessian" || o.scale_init == "hessian-block") {
    gptq_options.grid.mse = true;
    gptq_options.grid.hessian_search = true;
    gptq_options.grid.hessian_block = o.scale_init == "hessian-block";
  }
  if (o.format == "gptq") {
    GptqCheckpointOptions co;
    co.dir = leader ? output->staging_dir() : std::string();
    co.source_dir = o.model_dir;
    co.config_json = config_text;
    co.bits = o.gptq.grid.bits;
    co.group_size = o.gptq.group_size;
    co.sym = o.gptq.grid.sym;
    // With static groups g_idx stays in column order, so the checkpoint is an ordinary
    // non-act-order one and the fast kernels apply.
    co.desc_act = o.gptq.act_order && !o.gptq.static_groups;
    co.static_groups = o.gptq.static_groups;
    co.damp_percent = o.gptq.damp;
    co.ptq_json = OptionsJson(o).dump();
    if (leader) sink = std::make_unique<GptqCheckpointWriter>(co);
    // The classic format stores zero - 1: keep asymmetric zeros >= 1 (docs/formats.md).
    if (!gptq_options.grid.sym) gptq_options.grid.min_zero = 1;
  } else if (leader) {
    sink = std::make_unique<DequantizedCheckpoint>(output->staging_dir(), config_text,
                                                   OptionsJson(o).dump());
  }

  if (leader && !o.eval_path.empty() && o.eval_fp) {
    auto t = Clock::now();
    PTQ_ASSIGN_OR_RETURN(report.perplexity_fp, Perplexity(o.model_dir, o, "full precision"));
    report.eval_seconds += Since(t);
  }

  spdlog::info("quantizing {} blocks with {} W{} g{} on {} x {} calibration tokens{}",
               config.num_hidden_layers, o.method, o.gptq.grid.bits, o.gptq.group_size, o.samples,
               o.seq_len,
               EffectiveResidualAlpha(o) > 0
                   ? absl::StrFormat(", residual correction alpha %g", EffectiveResidualAlpha(o))
                   : std::string());
  RopeTable rope = BuildRopeTable(config, o.seq_len);
  auto t_embed = Clock::now();
  // This rank's token shard: a contiguous run of whole batches (a batch's forward must not depend on
  // which rank runs it).
  const int64_t batches = (o.samples + o.batch_windows - 1) / o.batch_windows;
  const auto [batch0, batch1] = UnitsOfRank(static_cast<size_t>(batches), group->rank(), group->size());
  const int64_t window0 = static_cast<int64_t>(batch0) * o.batch_windows;
  const int64_t window1 = std::min(o.samples, static_cast<int64_t>(batch1) * o.batch_windows);
  PTQ_ASSIGN_OR_RETURN(at::Tensor hidden,
                       model.Embed(calib_ids.narrow(0, window0, std::max<int64_t>(0, window1 - window0))));
  report.forward_seconds += Since(t_embed);
  const double alpha = EffectiveResidualAlpha(o);
  const bool attention_aware = (o.method == "boa" || o.method == "turboboa");
  // The full-precision stream X_f, only for the residual correction.
  at::Tensor hidden_fp;
  if (alpha > 0) hidden_fp = hidden.clone();
  // Finished blocks of an earlier run of this same job (worker/block_store.h): skipped below.
  std::optional<BlockStore> store;
  if (o.keep_blocks) {
    PTQ_ASSIGN_OR_RETURN(std::string key, JobKey(o));
    PTQ_ASSIGN_OR_RETURN(BlockStore opened, BlockStore::Open(BlockStoreDir(o.out_dir), key));
    store.emplace(std::move(opened));
    report.resumed_blocks = std::min<int64_t>(store->BlocksDone(), config.num_hidden_layers);
    if (report.resumed_blocks > 0) {
      spdlog::info("resuming: {} of {} blocks were finished by an earlier run ({})",
                   report.resumed_blocks, config.num_hidden_layers, store->dir());
    }
  }
  Progress progress("quantize", config.num_hidden_layers * 7, hooks.job_id);
  PipelineMetrics pipeline_metrics(hooks.job_id);
  std::set<std::string> quantized_names;
  std::vector<StoredLayer> block_layers;  // the current block's, for the block store
  // Everything that follows a layer's quantization (or its reload from the block store).
  auto layer_done = [&](int64_t layer, LinearKind kind, BlockWeights& w, const QuantizedLinear& q,
                        const LayerReport& lr, bool has_loss) -> absl::Status {
    const std::string& name = lr.name;
    report.layers.push_back(lr);
    pipeline_metrics.Layer(layer, LinearName(kind), lr);
    if (sink) PTQ_RETURN_IF_ERROR(sink->AddQuantized(name, q));
    quantized_names.insert(name);
    w.Linear(kind) = q.weight;
    if (store && leader && layer >= report.resumed_blocks) {
      block_layers.push_back({name, q, lr.loss, lr.relative_loss, lr.rtn_loss, lr.rtn_relative_loss,
                              lr.seconds});
    }
    progress.Advance(1, has_loss ? absl::StrFormat("block %d/%d %s rel. loss %.3g", layer + 1,
                                                   config.num_hidden_layers, LinearName(kind),
                                                   lr.relative_loss)
                                 : absl::StrFormat("block %d/%d %s", layer + 1,
                                                   config.num_hidden_layers, LinearName(kind)));
    if (hooks.on_layer) {
      LayerProgress p;
      p.block = layer;
      p.num_blocks = config.num_hidden_layers;
      p.layers_done = static_cast<int64_t>(report.layers.size());
      p.layers_total = config.num_hidden_layers * 7;
      p.elapsed_seconds = Since(job_start);
      p.eta_seconds = p.elapsed_seconds * static_cast<double>(p.layers_total - p.layers_done) /
                      static_cast<double>(p.layers_done);
      p.layer = &report.layers.back();
      hooks.on_layer(p);
    }
    return absl::OkStatus();
  };
  for (int64_t layer = 0; layer < config.num_hidden_layers; ++layer) {
    const auto block_start = Clock::now();
    PTQ_ASSIGN_OR_RETURN(BlockWeights w, model.Block(layer));
    // The quantizers return new tensors, so this shallow copy keeps the full-precision weights.
    const BlockWeights w_fp = w;
    block_layers.clear();
    std::vector<StoredLayer> stored;
    if (layer < report.resumed_blocks) {
      auto loaded = LoadCompleteBlock(*store, layer);
      if (loaded.ok()) {
        stored = std::move(*loaded);
      } else {  // damaged: redo this block and the ones after it rather than fail the job
        spdlog::warn("{}; quantizing from block {} on", loaded.status().ToString(), layer + 1);
        report.resumed_blocks = layer;
      }
    }
    if (layer < report.resumed_blocks) {
      // Saved by an earlier run of this job: reload the layers, then only the forward below.
      for (StoredLayer& l : stored) {
        std::optional<LinearKind> kind;
        for (LinearKind k : kAllLinears) {
          if (LinearWeightName(layer, k) == l.name) kind = k;
        }
        LayerReport lr;
        lr.name = l.name;
        lr.loss = l.report_loss;
        lr.relative_loss = l.report_relative_loss;
        lr.rtn_loss = l.report_rtn_loss;
        lr.rtn_relative_loss = l.report_rtn_relative_loss;
        lr.seconds = l.report_seconds;
        PTQ_RETURN_IF_ERROR(layer_done(layer, *kind, w, l.q, lr, o.method != "rtn"));
      }
    }
    for (LinearSlot slot : kSlotOrder) {
      if (layer < report.resumed_blocks) break;
      if (hooks.cancel != nullptr && hooks.cancel->load()) {
        return absl::CancelledError(absl::StrCat("cancelled in block ", layer + 1, " of ",
                                                 config.num_hidden_layers));
      }
      at::Tensor hessian;
      std::optional<AttentionStatistics> attention;
      std::optional<ValueStatistics> values;
      std::optional<CrossTermAccumulator> cross;
      at::Tensor residual;  // alpha D H^-1 of this slot, computed on first use
      if (o.method != "rtn") {
        SlotStatistics stats(slot, SlotInputDim(slot, config));
        std::vector<BlockObserver*> observers = {&stats};
        LinearSlot stop = slot;
        if (attention_aware && slot == LinearSlot::kAttnIn) {
          // Run through attention so the RoPE'd queries and keys (and the probabilities) are seen.
          QkHessian qk = QkHessian::kMoment;
          ParseQkHessian(o.qk_hessian, &qk);  // validated
          attention.emplace(config, o.seq_len, qk);
          observers.push_back(&*attention);
          if (o.value_block) {
            values.emplace(config);
            observers.push_back(&*values);
          }
          stop = LinearSlot::kAttnOut;
        }
        if (alpha > 0) cross.emplace(SlotInputDim(slot, config));
        ObserverList all(std::move(observers));
        auto t = Clock::now();
        const double cross_seconds =
            ForwardStatistics(hidden, o.sequential ? w : w_fp, alpha > 0 ? &hidden_fp : nullptr,
                              w_fp, config, rope, o.batch_windows, &all, slot, stop,
                              cross ? &*cross : nullptr);
        report.statistics_seconds += stats.seconds() + cross_seconds;
        report.forward_seconds += Since(t) - stats.seconds() - cross_seconds;
        auto t_reduce = Clock::now();
        PTQ_RETURN_IF_ERROR(AllReduceStatistics(*group, stats.hessian(),
                                                attention ? &*attention : nullptr,
                                                values ? &*values : nullptr,
                                                cross ? &*cross : nullptr));
        report.collective_seconds += Since(t_reduce);
        hessian = stats.hessian().Hessian();
      }
      for (LinearKind kind : kAllLinears) {
        if (SlotOf(kind) != slot) continue;
        const std::string name = LinearWeightName(layer, kind);
        auto t = Clock::now();
        LayerProblem problem;
        problem.name = name;
        problem.weight = w.Linear(kind);
        problem.hessian = hessian;
        problem.head_dim = config.head_dim;
        // With the residual correction the layer should reproduce W' = W + W R, for which
        // ||W X_f - Q X_q|| = ||(W' - Q) X_q|| + const (worker/residual_correction.h). For W_v with
        // value-block Hessians the input-side W' is an approximation (the exact target would need
        // both streams' attention probabilities).
        if (cross) {
          if (!residual.defined()) {
            PTQ_ASSIGN_OR_RETURN(residual, ResidualMatrix(hessian, cross->Cross(), alpha,
                                                          o.gptq.damp, name));
          }
          problem.residual = residual;
        }
        if (attention && (kind == LinearKind::kQ || kind == LinearKind::kK)) {
          problem.h_out = kind == LinearKind::kQ ? attention->QueryOutputHessians()
                                                 : attention->KeyOutputHessians();
        } else if (values && kind == LinearKind::kV) {
          problem.h_value = values->Hessians();
        }
        LayerSettings settings;
        settings.gptq = gptq_options;
        settings.joint_rows = o.method == "boa" ? 1 : o.joint_rows;
        settings.refine_iters = o.refine_iters;
        settings.requant_passes = o.requant_passes;
        settings.rtn = o.method == "rtn";
        settings.value_damp = EffectiveValueDamp(o);
        settings.act_order_rows = o.act_order_rows;
        PTQ_ASSIGN_OR_RETURN(QuantizedLayer quantized, QuantizeLayer(problem, settings, *group));
        QuantizedLinear& q = quantized.q;
        LayerReport lr;
        lr.name = name;
        lr.seconds = Since(t);
        report.quantize_seconds += lr.seconds;
        if (hessian.defined()) {
          lr.loss = quantized.loss;
          lr.relative_loss = quantized.base > 0 ? quantized.loss / quantized.base : 0;
          lr.rtn_loss = quantized.rtn_loss;
          lr.rtn_relative_loss = quantized.base > 0 ? quantized.rtn_loss / quantized.base : 0;
        }
        PTQ_RETURN_IF_ERROR(layer_done(layer, kind, w, q, lr, hessian.defined()));
      }
    }
    // A reloaded block is already in the store (an earlier version saved it again, empty).
    if (store && leader && layer >= report.resumed_blocks) {
      PTQ_RETURN_IF_ERROR(store->Save(layer, block_layers));
    }
    // The next block's inputs; after the last block nothing reads them (perplexity is measured on
    // the written checkpoint), which saves one block forward per stream.
    if (layer + 1 < config.num_hidden_layers) {
      auto t = Clock::now();
      ForwardAll(hidden, w, config, rope, o.batch_windows, nullptr, std::nullopt);
      if (alpha > 0) ForwardAll(hidden_fp, w_fp, config, rope, o.batch_windows, nullptr, std::nullopt);
      report.forward_seconds += Since(t);
    }
    report.block_seconds.push_back(Since(block_start));
    pipeline_metrics.Block(report, report.block_seconds.back(), o.samples * o.seq_len);
    if (hooks.on_block) hooks.on_block(layer, config.num_hidden_layers);
  }

  report.seconds = Since(job_start);
  report.collective_bytes = group->bytes();
  report.workers = group->size();
  if (!leader) return report;  // the leader writes and evaluates
  auto t_write = Clock::now();
  // Every linear layer must be in the checkpoint as quantized: a block lost on the way (a damaged
  // block store, say) would otherwise be copied below in full precision and pass unnoticed.
  for (int64_t layer = 0; layer < config.num_hidden_layers; ++layer) {
    for (LinearKind kind : kAllLinears) {
      if (!quantized_names.count(LinearWeightName(layer, kind))) {
        return absl::DataLossError(absl::StrCat(LinearWeightName(layer, kind),
                                                " was not quantized; the checkpoint is not written"));
      }
    }
  }
  for (const std::string& name : files->TensorNames()) {
    if (quantized_names.count(name)) continue;
    PTQ_ASSIGN_OR_RETURN(TensorView view, files->Get(name));
    PTQ_RETURN_IF_ERROR(sink->AddTensor(view));
  }
  PTQ_RETURN_IF_ERROR(sink->Finish());
  // The checkpoint holds everything now: the block store goes with the commit, under its lock.
  PTQ_RETURN_IF_ERROR(output->Commit(store ? std::vector<std::string>{store->dir()}
                                           : std::vector<std::string>{}));
  report.write_seconds = Since(t_write);
  spdlog::info("wrote {}", output->final_dir());

  if (!o.eval_path.empty()) {
    auto t = Clock::now();
    PTQ_ASSIGN_OR_RETURN(report.perplexity_quant, Perplexity(output->final_dir(), o, "quantized"));
    report.eval_seconds += Since(t);
  }
  report.seconds = Since(job_start);
  std::string title = absl::StrFormat("%s W%d g%d of %s", o.method, o.gptq.grid.bits,
                                      o.gptq.group_size, o.model_dir);
  if (report.perplexity_quant >= 0) {
    absl::StrAppendFormat(&title, ": perplexity %s%.4f", report.perplexity_fp >= 0
        ? absl::StrFormat("%.4f -> ", report.perplexity_fp) : std::string(), report.perplexity_quant);
  }
  PTQ_RETURN_IF_ERROR(WriteLayerReport(output->final_dir(), report, title));
  return report;
}

}  // namespace ptq::worker
