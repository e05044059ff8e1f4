#include "core/pipeline/quantize_pipeline.h"

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
#include "common/stable_hash.h"
#include "common/status_macros.h"
#include "common/tokenizer.h"
#include "nlohmann/json.hpp"
#include "core/stats/attention_statistics.h"
#include "core/pipeline/block_stream.h"
#include "core/dist/collective.h"
#include "core/checkpoint/block_store.h"
#include "core/model/calibration.h"
#include "core/checkpoint/checkpoint_size.h"
#include "core/checkpoint/compressed_tensors_writer.h"
#include "core/checkpoint/dequantized_checkpoint.h"
#include "core/checkpoint/gptq_checkpoint_writer.h"
#include "core/stats/hessian_accumulator.h"
#include "core/model/llama_block.h"
#include "core/checkpoint/layer_report.h"
#include "core/quant/layer_shard.h"
#include "core/model/llama_model.h"
#include "core/checkpoint/output_folder.h"
#include "core/checkpoint/serving_support.h"
#include "core/model/perplexity.h"
#include "core/pipeline/pipeline_metrics.h"
#include "core/pipeline/progress.h"
#include "core/pipeline/quantize_plan.h"
#include "core/quant/residual_correction.h"
#include "core/stats/value_statistics.h"

namespace ptq {
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
  SlotStatistics(LinearSlot slot, int64_t dim, c10::Device device)
      : slot_(slot), hessian_(dim, device) {}
  void OnLinearInput(LinearSlot slot, const at::Tensor& x) override {
    if (slot != slot_) return;
    auto t = Clock::now();
    hessian_.Add(x);
    seconds_ += Since(t);
  }
  bool ReadsProbabilities() const override { return false; }
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
  bool ReadsProbabilities() const override {
    for (const BlockObserver* o : observers_) {
      if (o->ReadsProbabilities()) return true;
    }
    return false;
  }

 private:
  std::vector<BlockObserver*> observers_;
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
    // rows (core/quant/layer_shard.h): each rank receives the sums of its own heads.
    ExactSum& v = values->sum();
    const int64_t kv_heads = v.high().size(0);
    std::vector<int64_t> heads_per_rank;
    for (int r = 0; r < group.size(); ++r) {
      auto [first, last] = UnitsOfRank(static_cast<size_t>(kv_heads), r, group.size());
      heads_per_rank.push_back(static_cast<int64_t>(last - first));
    }
    PTQ_RETURN_IF_ERROR(group.ReduceScatterRows(v.high(), heads_per_rank));
    PTQ_RETURN_IF_ERROR(group.ReduceScatterRows(v.low(), heads_per_rank));
    PTQ_RETURN_IF_ERROR(group.AllReduceSum(v.non_finite()));
    counts.push_back(&values->count());
  }
  if (cross != nullptr) {
    sums.push_back(&cross->sum());
    counts.push_back(&cross->count());
  }
  for (ExactSum* sum : sums) {
    PTQ_RETURN_IF_ERROR(group.AllReduceSum(sum->high()));
    PTQ_RETURN_IF_ERROR(group.AllReduceSum(sum->low()));
    PTQ_RETURN_IF_ERROR(group.AllReduceSum(sum->non_finite()));
  }
  at::Tensor scalars = at::empty({static_cast<int64_t>(counts.size())}, at::kLong);
  for (size_t i = 0; i < counts.size(); ++i) scalars[i] = *counts[i];
  PTQ_RETURN_IF_ERROR(group.AllReduceSum(scalars));
  for (size_t i = 0; i < counts.size(); ++i) *counts[i] = scalars[i].item<int64_t>();
  return absl::OkStatus();
}

// Block `block`'s saved layers, or an error naming what is wrong with them: each of the block's
// linear layers must be there exactly once (a block saved without them must not resume as done).
absl::StatusOr<std::vector<StoredLayer>> LoadCompleteBlock(const BlockStore& store, int64_t block) {
  PTQ_ASSIGN_OR_RETURN(std::vector<StoredLayer> stored, store.Load(block));
  std::set<std::string> names;
  for (const StoredLayer& l : stored) names.insert(l.name);
  for (LinearKind k : kAllLinears) {
    if (!names.count(LinearWeightName(block, k))) {
      return absl::DataLossError(absl::StrFormat("%s: block %d lacks %s", store.dir(), block,
                                                 LinearWeightName(block, k)));
    }
  }
  if (names.size() != stored.size() || stored.size() != kAllLinears.size()) {
    return absl::DataLossError(absl::StrFormat("%s: block %d holds %d layers, not %d", store.dir(),
                                               block, stored.size(), kAllLinears.size()));
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
  const std::string text = absl::StrCat(CheckpointOptionsJson(o).dump(), "|batch ", o.batch_windows, "|model ",
                                        model, "|calib ", calib_size, " ",
                                        StableHash64(calib));
  return absl::StrFormat("%016x", StableHash64(text));
}

// Everything past the helpers: the job as a sequence of named steps over one plan.

// One run of RunQuantize: the plan, the open model and calibration streams, the outputs, the report.
class QuantizeJob {
 public:
  QuantizeJob(QuantizePlan plan, const JobHooks& hooks, Collective& group)
      : plan_(std::move(plan)),
        o_(plan_.options),
        hooks_(hooks),
        group_(group),
        leader_(group.rank() == 0),
        progress_("quantize", plan_.num_linears, hooks.job_id),
        metrics_(hooks.job_id) {}

  // Opens the model, tokenizer and calibration text, and (on the leader) the output folder and its
  // checkpoint writer: every input is checked before any block is quantized.
  absl::Status Open();
  // Full-precision perplexity (leader, with --eval unless skipped).
  absl::Status EvaluateFullPrecision();
  // Embeds this rank's share of the calibration windows and opens the block store to resume from.
  absl::Status StartStreams();
  // Quantizes (or reloads) block `block`, then runs it to feed the next one.
  absl::Status RunBlock(int64_t block);
  // Leader: writes the checkpoint, commits the output folder, evaluates and writes the layer report.
  absl::Status Finish();

  bool leader() const { return leader_; }
  QuantizeReport& report() { return report_; }
  double Elapsed() const { return Since(start_); }

 private:
  // The statistics of one slot's inputs, all-reduced over the group.
  struct SlotInputs {
    at::Tensor hessian;  // undefined for rtn
    std::optional<AttentionStatistics> attention;
    std::optional<ValueStatistics> values;
    std::optional<CrossTermAccumulator> cross;
  };
  absl::StatusOr<SlotInputs> CollectStatistics(LinearSlot slot, const BlockWeights& w,
                                               const BlockWeights& w_fp);
  // Statistics of `slot`'s input over every calibration batch, the block continued from the stage
  // before (with attention run for `observer` too when `through_attention`, and the full-precision
  // stream's cross term when the residual correction is on); returns the seconds spent on the
  // cross term.
  double ForwardStatistics(const BlockWeights& w, const BlockWeights& w_fp, BlockObserver* observer,
                           LinearSlot slot, bool through_attention, CrossTermAccumulator* cross);
  absl::Status QuantizeSlot(int64_t block, LinearSlot slot, BlockWeights& w, const BlockWeights& w_fp);
  // Reloads block `block` from the block store; false when it must be quantized again.
  absl::StatusOr<bool> ResumeBlock(int64_t block, BlockWeights& w);
  // Everything that follows a layer's quantization or reload: sink, block store, progress, hooks.
  absl::Status LayerDone(int64_t block, LinearKind kind, BlockWeights& w, const QuantizedLinear& q,
                         const LayerReport& lr, bool has_loss);
  void AdvanceStreams(const BlockWeights& w, const BlockWeights& w_fp);
  absl::StatusOr<double> Perplexity(const std::string& model_dir, const std::string& label) const;

  const QuantizePlan plan_;
  const QuantizeOptions& o_;
  const JobHooks& hooks_;
  Collective& group_;
  const bool leader_;
  const Clock::time_point start_ = Clock::now();
  QuantizeReport report_;
  Progress progress_;
  PipelineMetrics metrics_;

  std::shared_ptr<const ModelFiles> files_;
  std::unique_ptr<LlamaModel> model_;
  at::Tensor calib_ids_;
  std::optional<RopeTable> rope_;
  at::Tensor hidden_;     // this rank's calibration stream through the partly quantized model
  at::Tensor hidden_fp_;  // the full-precision stream X_f, only for the residual correction
  std::vector<bool> fp_batch_;  // per batch of hidden_: whether hidden_fp_ holds it too
  // The two streams' way through the current block, stage by stage, and the memory they may keep.
  std::optional<StageCacheBudget> cache_budget_;
  std::unique_ptr<BlockStream> stream_, stream_fp_;
  std::optional<OutputFolder> output_;       // leader
  std::unique_ptr<CheckpointSink> sink_;     // leader
  std::optional<BlockStore> store_;
  std::set<std::string> quantized_names_;
  std::vector<StoredLayer> block_layers_;    // the current block's, for the block store
};

absl::Status QuantizeJob::Open() {
  PTQ_ASSIGN_OR_RETURN(std::unique_ptr<ModelFiles> files, ModelFiles::Open(o_.model_dir));
  files_ = std::move(files);
  model_ = std::make_unique<LlamaModel>(plan_.config, std::make_unique<SafetensorsWeightSource>(files_));
  model_->SetDevice(plan_.device);  // each block is copied there when it is loaded
  const int64_t vocab = plan_.config.vocab_size;
  PTQ_ASSIGN_OR_RETURN(auto tokenizer, TokenizerForModel(o_.model_dir, vocab));
  PTQ_ASSIGN_OR_RETURN(auto calib_tokens, LoadTokens(o_.calib_path, *tokenizer, vocab));
  PTQ_ASSIGN_OR_RETURN(calib_ids_, SampleCalibrationWindows(calib_tokens, o_.samples, o_.seq_len, o_.seed));
  if (!o_.eval_path.empty()) {  // read the evaluation text now, so a bad path fails before the work
    PTQ_RETURN_IF_ERROR(LoadTokens(o_.eval_path, *tokenizer, vocab).status());
  }
  if (!leader_) return absl::OkStatus();
  PTQ_ASSIGN_OR_RETURN(OutputFolder prepared, OutputFolder::Prepare(o_.out_dir, o_.force));
  output_.emplace(std::move(prepared));
  const bool dequantized = plan_.format == CheckpointFormat::kDequantized;
  PTQ_ASSIGN_OR_RETURN(const uint64_t needed,
                       EstimateCheckpointBytes(o_.model_dir, *files_, plan_.config, o_.gptq.grid.bits,
                                               o_.gptq.group_size, dequantized));
  // On this and every later error `output_` removes its staging folder as it goes out of scope.
  PTQ_RETURN_IF_ERROR(output_->CheckFreeSpace(needed));
  report_.out_dir = output_->final_dir();
  PTQ_ASSIGN_OR_RETURN(std::string config_text, ReadFileToString(o_.model_dir + "/config.json"));
  if (dequantized) {
    sink_ = std::make_unique<DequantizedCheckpoint>(output_->staging_dir(), config_text,
                                                    plan_.options_json);
  } else if (plan_.format == CheckpointFormat::kCompressedTensors) {
    CompressedTensorsOptions co = plan_.compressed_tensors;
    co.dir = output_->staging_dir();
    co.config_json = config_text;
    sink_ = std::make_unique<CompressedTensorsWriter>(co);
  } else {
    GptqCheckpointOptions co = plan_.gptq_checkpoint;
    co.dir = output_->staging_dir();
    co.config_json = config_text;
    sink_ = std::make_unique<GptqCheckpointWriter>(co);
  }
  return absl::OkStatus();
}

absl::Status QuantizeJob::EvaluateFullPrecision() {
  if (!leader_ || o_.eval_path.empty() || !o_.eval_fp) return absl::OkStatus();
  auto t = Clock::now();
  PTQ_ASSIGN_OR_RETURN(report_.perplexity_fp, Perplexity(o_.model_dir, "full precision"));
  report_.eval_seconds += Since(t);
  return absl::OkStatus();
}

absl::Status QuantizeJob::StartStreams() {
  spdlog::info("quantizing {} blocks with {} W{} g{} on {} x {} calibration tokens{}",
               plan_.num_blocks, MethodName(plan_.method), o_.gptq.grid.bits, o_.gptq.group_size,
               o_.samples, o_.seq_len,
               plan_.residual_alpha > 0
                   ? absl::StrFormat(", residual correction alpha %g%s", plan_.residual_alpha,
                                     plan_.residual_every > 1
                                         ? absl::StrFormat(" on 1 batch in %d", plan_.residual_every)
                                         : std::string())
                   : std::string());
  rope_.emplace(BuildRopeTable(plan_.config, o_.seq_len).To(plan_.device));
  auto t_embed = Clock::now();
  // This rank's token shard: a contiguous run of whole batches (a batch's forward must not depend on
  // which rank runs it).
  const int64_t batches = (o_.samples + o_.batch_windows - 1) / o_.batch_windows;
  const auto [batch0, batch1] = UnitsOfRank(static_cast<size_t>(batches), group_.rank(), group_.size());
  const int64_t window0 = static_cast<int64_t>(batch0) * o_.batch_windows;
  const int64_t window1 = std::min(o_.samples, static_cast<int64_t>(batch1) * o_.batch_windows);
  PTQ_ASSIGN_OR_RETURN(hidden_, model_->Embed(calib_ids_.narrow(
                                    0, window0, std::max<int64_t>(0, window1 - window0))));
  report_.forward_seconds += Since(t_embed);
  if (plan_.residual_alpha > 0) {
    // The full-precision stream runs the batches whose index in the whole calibration set is a
    // multiple of residual_every: whole batches, so any number of workers sums the same products.
    std::vector<at::Tensor> parts;
    for (int64_t b = static_cast<int64_t>(batch0); b < static_cast<int64_t>(batch1); ++b) {
      const bool runs = b % plan_.residual_every == 0;
      fp_batch_.push_back(runs);
      const int64_t first = b * o_.batch_windows;
      if (runs) {
        parts.push_back(hidden_.narrow(0, first - window0,
                                       std::min(o_.batch_windows, window1 - first)));
      }
    }
    hidden_fp_ = parts.empty() ? hidden_.narrow(0, 0, 0).clone() : at::cat(parts, 0);
  }
  cache_budget_.emplace(o_.forward_cache_mib * (int64_t{1} << 20));
  stream_ = std::make_unique<BlockStream>(&hidden_, plan_.config, *rope_, o_.batch_windows,
                                          &*cache_budget_);
  if (hidden_fp_.defined()) {
    stream_fp_ = std::make_unique<BlockStream>(&hidden_fp_, plan_.config, *rope_, o_.batch_windows,
                                               &*cache_budget_);
  }
  // Finished blocks of an earlier run of this same job (core/checkpoint/block_store.h).
  if (!o_.keep_blocks) return absl::OkStatus();
  PTQ_ASSIGN_OR_RETURN(std::string key, JobKey(o_));
  PTQ_ASSIGN_OR_RETURN(BlockStore opened, BlockStore::Open(BlockStoreDir(o_.out_dir), key));
  store_.emplace(std::move(opened));
  report_.resumed_blocks = std::min<int64_t>(store_->BlocksDone(), plan_.num_blocks);
  if (report_.resumed_blocks > 0) {
    spdlog::info("resuming: {} of {} blocks were finished by an earlier run ({})",
                 report_.resumed_blocks, plan_.num_blocks, store_->dir());
  }
  return absl::OkStatus();
}

absl::Status QuantizeJob::RunBlock(int64_t block) {
  const auto block_start = Clock::now();
  PTQ_ASSIGN_OR_RETURN(BlockWeights w, model_->Block(block));
  // The quantizers return new tensors, so this shallow copy keeps the full-precision weights.
  const BlockWeights w_fp = w;
  block_layers_.clear();
  PTQ_ASSIGN_OR_RETURN(const bool resumed, ResumeBlock(block, w));
  if (!resumed) {
    for (LinearSlot slot : kSlotOrder) {
      if (hooks_.cancel != nullptr && hooks_.cancel->load()) {
        return absl::CancelledError(absl::StrCat("cancelled in block ", block + 1, " of ",
                                                 plan_.num_blocks));
      }
      PTQ_RETURN_IF_ERROR(QuantizeSlot(block, slot, w, w_fp));
    }
    if (store_ && leader_) PTQ_RETURN_IF_ERROR(store_->Save(block, block_layers_));
  }
  // The next block's inputs; after the last block nothing reads them (perplexity is measured on
  // the written checkpoint), which saves one block forward per stream.
  if (block + 1 < plan_.num_blocks) {
    AdvanceStreams(w, w_fp);
  } else {
    stream_->Clear();
    if (stream_fp_) stream_fp_->Clear();
    cache_budget_->FreeHeld();  // writing and evaluating need none of the stages' memory
  }
  report_.forward_cache_bytes = cache_budget_->peak();
  report_.block_seconds.push_back(Since(block_start));
  metrics_.Block(report_, report_.block_seconds.back(), o_.samples * o_.seq_len);
  if (hooks_.on_block) hooks_.on_block(block, plan_.num_blocks, resumed);
  return absl::OkStatus();
}

absl::StatusOr<bool> QuantizeJob::ResumeBlock(int64_t block, BlockWeights& w) {
  if (block >= report_.resumed_blocks) return false;
  absl::StatusOr<std::vector<StoredLayer>> stored = LoadCompleteBlock(*store_, block);
  if (!stored.ok()) {  // damaged: redo this block and the ones after it rather than fail the job
    spdlog::warn("{}; quantizing from block {} on", stored.status().ToString(), block + 1);
    report_.resumed_blocks = block;
    return false;
  }
  // Saved by an earlier run of this job: reload the layers; only the forward remains.
  for (const StoredLayer& l : *stored) {
    std::optional<LinearKind> kind;
    for (LinearKind k : kAllLinears) {
      if (LinearWeightName(block, k) == l.name) kind = k;
    }
    LayerReport lr;
    lr.name = l.name;
    lr.loss = l.report_loss;
    lr.relative_loss = l.report_relative_loss;
    lr.rtn_loss = l.report_rtn_loss;
    lr.rtn_relative_loss = l.report_rtn_relative_loss;
    lr.seconds = l.report_seconds;
    PTQ_RETURN_IF_ERROR(LayerDone(block, *kind, w, l.q, lr, plan_.method != Method::kRtn));
  }
  return true;
}

double QuantizeJob::ForwardStatistics(const BlockWeights& w, const BlockWeights& w_fp,
                                      BlockObserver* observer, LinearSlot slot,
                                      bool through_attention, CrossTermAccumulator* cross) {
  double cross_seconds = 0;
  int64_t fp_b = 0;  // the full-precision stream's batch: the same windows as batch b
  for (int64_t b = 0; b < stream_->batches(); ++b) {
    const at::Tensor x = stream_->SlotInput(slot, b, w);
    observer->OnLinearInput(slot, x);
    if (through_attention) stream_->ObserveAttention(b, w, observer);
    if (cross == nullptr || !fp_batch_[b]) continue;
    const at::Tensor x_fp = stream_fp_->SlotInput(slot, fp_b++, w_fp);
    auto t = Clock::now();
    cross->Add(x_fp, x);
    cross_seconds += Since(t);
  }
  return cross_seconds;
}

absl::StatusOr<QuantizeJob::SlotInputs> QuantizeJob::CollectStatistics(LinearSlot slot,
                                                                        const BlockWeights& w,
                                                                        const BlockWeights& w_fp) {
  SlotInputs in;
  if (plan_.method == Method::kRtn) return in;
  const int64_t dim = SlotInputDim(slot, plan_.config);
  SlotStatistics stats(slot, dim, plan_.device);
  std::vector<BlockObserver*> observers = {&stats};
  const bool through_attention = plan_.attention_aware && slot == LinearSlot::kAttnIn;
  if (through_attention) {
    // Run through attention so the RoPE'd queries and keys (and the probabilities) are seen.
    in.attention.emplace(plan_.config, o_.seq_len, plan_.qk_hessian, plan_.device);
    observers.push_back(&*in.attention);
    if (plan_.value_block) {
      in.values.emplace(plan_.config, plan_.device);
      observers.push_back(&*in.values);
    }
  }
  if (plan_.residual_alpha > 0) in.cross.emplace(dim, plan_.device);
  ObserverList all(std::move(observers));
  auto t = Clock::now();
  const double cross_seconds = ForwardStatistics(o_.sequential ? w : w_fp, w_fp, &all, slot,
                                                 through_attention, in.cross ? &*in.cross : nullptr);
  report_.statistics_seconds += stats.seconds() + cross_seconds;
  report_.forward_seconds += Since(t) - stats.seconds() - cross_seconds;
  auto t_reduce = Clock::now();
  PTQ_RETURN_IF_ERROR(AllReduceStatistics(group_, stats.hessian(),
                                          in.attention ? &*in.attention : nullptr,
                                          in.values ? &*in.values : nullptr,
                                          in.cross ? &*in.cross : nullptr));
  report_.collective_seconds += Since(t_reduce);
  in.hessian = stats.hessian().Hessian();
  return in;
}

absl::Status QuantizeJob::QuantizeSlot(int64_t block, LinearSlot slot, BlockWeights& w,
                                       const BlockWeights& w_fp) {
  PTQ_ASSIGN_OR_RETURN(SlotInputs in, CollectStatistics(slot, w, w_fp));
  // The slot's layers share their input Hessian, so its factorisation is computed once.
  std::shared_ptr<const GptqFactor> factor;
  at::Tensor residual;  // alpha D (H + damp)^-1 of this slot, from the factor where it can be
  if (in.hessian.defined()) {
    auto t = Clock::now();
    std::string what;
    for (LinearKind kind : kAllLinears) {
      if (SlotOf(kind) == slot) absl::StrAppend(&what, what.empty() ? "" : ", ", LinearWeightName(block, kind));
    }
    PTQ_ASSIGN_OR_RETURN(GptqFactor f, PrepareGptq(in.hessian, plan_.layer.gptq, what,
                                                   /*keep_f64_factor=*/in.cross.has_value()));
    if (in.cross && f.u_f64.defined()) {
      residual = ResidualMatrixFromFactor(in.cross->Cross(), f.u_f64, plan_.residual_alpha);
      f.u_f64 = at::Tensor();
    }
    factor = std::make_shared<const GptqFactor>(std::move(f));
    report_.quantize_seconds += Since(t);
  }
  for (LinearKind kind : kAllLinears) {
    if (SlotOf(kind) != slot) continue;
    const std::string name = LinearWeightName(block, kind);
    auto t = Clock::now();
    LayerProblem problem;
    problem.name = name;
    problem.weight = w.Linear(kind);
    problem.hessian = in.hessian;
    problem.head_dim = plan_.config.head_dim;
    problem.factor = factor;
    // With the residual correction the layer should reproduce W' = W + W R, for which
    // ||W X_f - Q X_q|| = ||(W' - Q) X_q|| + const (core/quant/residual_correction.h). For W_v with
    // value-block Hessians the input-side W' is an approximation (the exact target would need
    // both streams' attention probabilities).
    if (in.cross) {
      if (!residual.defined()) {  // act-order: the factor is of the permuted H
        PTQ_ASSIGN_OR_RETURN(residual, ResidualMatrix(in.hessian, in.cross->Cross(),
                                                      plan_.residual_alpha, o_.gptq.damp, name));
      }
      problem.residual = residual;
    }
    if (in.attention && (kind == LinearKind::kQ || kind == LinearKind::kK)) {
      problem.h_out = kind == LinearKind::kQ ? in.attention->QueryOutputHessians()
                                             : in.attention->KeyOutputHessians();
    } else if (in.values && kind == LinearKind::kV) {
      problem.h_value = in.values->Hessians();
    }
    PTQ_ASSIGN_OR_RETURN(QuantizedLayer quantized, QuantizeLayer(problem, plan_.layer, group_));
    LayerReport lr;
    lr.name = name;
    lr.seconds = Since(t);
    report_.quantize_seconds += lr.seconds;
    if (in.hessian.defined()) {
      lr.loss = quantized.loss;
      lr.relative_loss = quantized.base > 0 ? quantized.loss / quantized.base : 0;
      lr.rtn_loss = quantized.rtn_loss;
      lr.rtn_relative_loss = quantized.base > 0 ? quantized.rtn_loss / quantized.base : 0;
    }
    PTQ_RETURN_IF_ERROR(LayerDone(block, kind, w, quantized.q, lr, in.hessian.defined()));
  }
  return absl::OkStatus();
}

absl::Status QuantizeJob::LayerDone(int64_t block, LinearKind kind, BlockWeights& w,
                                    const QuantizedLinear& q, const LayerReport& lr, bool has_loss) {
  report_.layers.push_back(lr);
  metrics_.Layer(block, LinearName(kind), lr);
  // The sinks (checkpoint, block store) read host memory: the layer's one trip to the host.
  const bool to_store = store_ && leader_ && block >= report_.resumed_blocks;  // a reloaded block is there
  if (sink_ || to_store) {
    const QuantizedLinear host = q.To(c10::kCPU);
    if (sink_) PTQ_RETURN_IF_ERROR(sink_->AddQuantized(lr.name, host));
    if (to_store) {
      block_layers_.push_back({lr.name, host, lr.loss, lr.relative_loss, lr.rtn_loss,
                               lr.rtn_relative_loss, lr.seconds});
    }
  }
  quantized_names_.insert(lr.name);
  w.Linear(kind) = q.weight.to(plan_.device);
  std::string what = absl::StrFormat("block %d/%d %s", block + 1, plan_.num_blocks, LinearName(kind));
  if (has_loss) absl::StrAppendFormat(&what, " rel. loss %.3g", lr.relative_loss);
  progress_.Advance(1, what);
  if (hooks_.on_layer) {
    LayerProgress p;
    p.block = block;
    p.num_blocks = plan_.num_blocks;
    p.layers_done = static_cast<int64_t>(report_.layers.size());
    p.layers_total = plan_.num_linears;
    p.elapsed_seconds = Elapsed();
    p.eta_seconds = p.elapsed_seconds * static_cast<double>(p.layers_total - p.layers_done) /
                    static_cast<double>(p.layers_done);
    p.layer = &report_.layers.back();
    p.reloaded = block < report_.resumed_blocks;
    hooks_.on_layer(p);
  }
  return absl::OkStatus();
}

void QuantizeJob::AdvanceStreams(const BlockWeights& w, const BlockWeights& w_fp) {
  auto t = Clock::now();
  stream_->Advance(w);
  if (stream_fp_) stream_fp_->Advance(w_fp);
  report_.forward_seconds += Since(t);
}

absl::Status QuantizeJob::Finish() {
  auto t_write = Clock::now();
  // Every linear layer must be in the checkpoint as quantized: a block lost on the way (a damaged
  // block store, say) would otherwise be copied below in full precision and pass unnoticed.
  for (int64_t block = 0; block < plan_.num_blocks; ++block) {
    for (LinearKind kind : kAllLinears) {
      if (!quantized_names_.count(LinearWeightName(block, kind))) {
        return absl::DataLossError(absl::StrCat(LinearWeightName(block, kind),
                                                " was not quantized; the checkpoint is not written"));
      }
    }
  }
  for (const std::string& name : files_->TensorNames()) {
    if (quantized_names_.count(name)) continue;
    PTQ_ASSIGN_OR_RETURN(TensorView view, files_->Get(name));
    PTQ_RETURN_IF_ERROR(sink_->AddTensor(view));
  }
  PTQ_RETURN_IF_ERROR(sink_->Finish());
  if (hooks_.before_commit) PTQ_RETURN_IF_ERROR(hooks_.before_commit());
  // The checkpoint holds everything now: the block store goes with the commit, under its lock.
  PTQ_RETURN_IF_ERROR(output_->Commit(store_ ? std::vector<std::string>{store_->dir()}
                                             : std::vector<std::string>{}));
  report_.write_seconds = Since(t_write);
  spdlog::info("wrote {}", output_->final_dir());

  if (!o_.eval_path.empty()) {
    auto t = Clock::now();
    PTQ_ASSIGN_OR_RETURN(report_.perplexity_quant, Perplexity(output_->final_dir(), "quantized"));
    report_.eval_seconds += Since(t);
  }
  report_.seconds = Elapsed();
  std::string title = absl::StrFormat("%s W%d g%d of %s", MethodName(plan_.method),
                                      o_.gptq.grid.bits, o_.gptq.group_size, o_.model_dir);
  if (report_.perplexity_quant >= 0) {
    absl::StrAppendFormat(&title, ": perplexity %s%.4f", report_.perplexity_fp >= 0
        ? absl::StrFormat("%.4f -> ", report_.perplexity_fp) : std::string(), report_.perplexity_quant);
  }
  return WriteLayerReport(output_->final_dir(), report_, title);
}

absl::StatusOr<double> QuantizeJob::Perplexity(const std::string& model_dir,
                                               const std::string& label) const {
  PTQ_ASSIGN_OR_RETURN(auto model, LlamaModel::Open(model_dir));
  model->SetDevice(plan_.device);
  PTQ_ASSIGN_OR_RETURN(auto tokenizer, TokenizerForModel(model_dir, model->config().vocab_size));
  PTQ_ASSIGN_OR_RETURN(auto tokens, LoadTokens(o_.eval_path, *tokenizer, model->config().vocab_size));
  PerplexityOptions po;
  po.seq_len = o_.eval_seq_len > 0 ? o_.eval_seq_len : o_.seq_len;
  po.max_windows = o_.eval_max_windows;
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

absl::StatusOr<QuantizeReport> RunQuantize(const QuantizeOptions& options, const JobHooks& hooks) {
  // The group this process quantizes with: rank 0 (the leader) writes the checkpoint and evaluates.
  std::unique_ptr<Collective> alone;
  Collective* group = hooks.group;
  if (group == nullptr) {
    alone = MakeSingleProcessCollective();
    group = alone.get();
  }
  PTQ_ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(options.model_dir));
  PTQ_ASSIGN_OR_RETURN(QuantizePlan plan, ResolvePlan(options, config));
  if (!group->Accepts(plan.device)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--device ", options.device, " with the ", group->backend(), " collective: it reads host "
        "memory only; a group of CUDA workers uses NCCL (ptq-worker --device cuda:N)"));
  }
  // Where the result will load, said before any work (and kept for the report).
  const ServingSupport serving = DescribeServing(options, config);
  if (group->rank() == 0) {
    for (const std::string& line : ServingSupportLines(serving)) {
      if (line.find("warning: ") != std::string::npos) {
        spdlog::warn("{}", line);
      } else {
        spdlog::info("{}", line);
      }
    }
  }
  QuantizeJob job(std::move(plan), hooks, *group);
  job.report().serving_json = ServingSupportJson(serving).dump();
  PTQ_RETURN_IF_ERROR(job.Open());
  PTQ_RETURN_IF_ERROR(job.EvaluateFullPrecision());
  PTQ_RETURN_IF_ERROR(job.StartStreams());
  for (int64_t block = 0; block < config.num_hidden_layers; ++block) {
    PTQ_RETURN_IF_ERROR(job.RunBlock(block));
  }
  QuantizeReport& report = job.report();
  report.seconds = job.Elapsed();
  report.collective_bytes = group->bytes();
  report.workers = group->size();
  if (!job.leader()) return report;  // the leader writes and evaluates
  PTQ_RETURN_IF_ERROR(job.Finish());
  return report;
}

}  // namespace ptq
