#include "core/pipeline/block_stream.h"

#include <ATen/ATen.h>

#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <utility>

#include <c10/util/accumulate.h>

namespace ptq {

namespace {

int64_t Bytes(const at::Tensor& t) { return t.numel() * static_cast<int64_t>(t.element_size()); }

// A CPU buffer on transparent huge pages where the kernel offers them (madvise mode included): a
// stage of the small model is 64-180 MiB, 16-46 thousand 4 KiB page faults, each of which costs
// tens of microseconds on a paravirtualised VM; 2 MiB pages take 512 times fewer.
at::Tensor EmptyOnHugePages(at::IntArrayRef shape, const at::TensorOptions& options) {
#ifdef MADV_HUGEPAGE
  constexpr size_t kHugePage = size_t{2} << 20;
  const size_t bytes = static_cast<size_t>(c10::multiply_integers(shape)) * options.dtype().itemsize();
  const size_t whole_pages = (bytes + kHugePage - 1) / kHugePage * kHugePage;  // the advice's range
  void* memory = nullptr;
  if (bytes >= kHugePage && posix_memalign(&memory, kHugePage, whole_pages) == 0) {
    madvise(memory, whole_pages, MADV_HUGEPAGE);
    return at::from_blob(memory, shape, [](void* p) { std::free(p); }, options);
  }
#endif
  return at::empty(shape, options);
}

}  // namespace

at::Tensor StageCacheBudget::Take(at::IntArrayRef shape, const at::TensorOptions& options) {
  const int64_t numel = c10::multiply_integers(shape);
  for (size_t i = 0; i < held_.size(); ++i) {
    const at::Tensor& h = held_[i];
    if (h.numel() == numel && h.dtype() == options.dtype() && h.device() == options.device()) {
      at::Tensor buffer = h.view(shape);
      held_bytes_ -= Bytes(h);
      held_.erase(held_.begin() + static_cast<std::ptrdiff_t>(i));
      return buffer;
    }
  }
  const int64_t bytes = numel * static_cast<int64_t>(options.dtype().itemsize());
  // Free held buffers (largest first) until the new one fits.
  std::sort(held_.begin(), held_.end(),
            [](const at::Tensor& a, const at::Tensor& b) { return Bytes(a) < Bytes(b); });
  while (used_ + bytes > limit_ && !held_.empty()) {
    const int64_t freed = Bytes(held_.back());
    held_.pop_back();
    held_bytes_ -= freed;
    used_ -= freed;
  }
  if (used_ + bytes > limit_) return at::Tensor();
  used_ += bytes;
  peak_ = std::max(peak_, used_);
  return options.device().is_cpu() ? EmptyOnHugePages(shape, options) : at::empty(shape, options);
}

void StageCacheBudget::Give(at::Tensor buffer) {
  held_bytes_ += Bytes(buffer);
  held_.push_back(buffer.reshape({-1}));
}

void StageCacheBudget::FreeHeld() {
  held_.clear();
  used_ -= held_bytes_;
  held_bytes_ = 0;
}

BlockStream::BlockStream(at::Tensor* hidden, const ModelConfig& config, const RopeTable& rope,
                         int64_t batch, StageCacheBudget* budget)
    : hidden_(hidden), config_(config), rope_(rope), batch_(batch), budget_(budget) {}

BlockStream::~BlockStream() { Clear(); }

int64_t BlockStream::batches() const { return (hidden_->size(0) + batch_ - 1) / batch_; }

at::Tensor BlockStream::Rows(const at::Tensor& t, int64_t b) const {
  const int64_t b0 = b * batch_;
  return t.narrow(0, b0, std::min(batch_, t.size(0) - b0));
}

std::vector<at::Tensor> BlockStream::Deps(Stage stage, const BlockWeights& w) {
  std::vector<at::Tensor> deps = {w.input_norm, w.q, w.k, w.v, w.q_bias, w.k_bias, w.v_bias};
  if (stage >= kResidual) deps.push_back(w.o);
  if (stage >= kActivation) deps.insert(deps.end(), {w.post_norm, w.gate, w.up});
  return deps;
}

int64_t BlockStream::Dim(Stage stage) const {
  switch (stage) {
    case kAttention: return config_.num_attention_heads * config_.head_dim;
    case kResidual: return config_.hidden_size;
    case kActivation: return config_.intermediate_size;
    case kStages: break;
  }
  return 0;
}

void BlockStream::Release(Stage stage) {
  Kept& k = kept_[stage];
  if (k.values.defined()) budget_->Give(std::move(k.values));
  k = Kept{};
}

void BlockStream::Clear() {
  for (int s = 0; s < kStages; ++s) Release(static_cast<Stage>(s));
}

void BlockStream::Store(Stage stage, int64_t b, const BlockWeights& w, const at::Tensor& out) {
  Kept& k = kept_[stage];
  if (!Matches(k, stage, w)) {  // kept for other weights: start over (keeping the memory if any)
    k.deps = Deps(stage, w);
    k.filled.assign(static_cast<size_t>(batches()), false);
    k.filled_count = 0;
    if (!k.values.defined()) {
      k.values = budget_->Take({hidden_->size(0), hidden_->size(1), Dim(stage)}, out.options());
    }
  }
  if (!k.values.defined() || k.filled[b]) return;
  Rows(k.values, b).copy_(out);
  k.filled[b] = true;
  // The attention output only feeds the residual: once that is complete, its memory is free.
  if (++k.filled_count == batches() && stage == kResidual) Release(kAttention);
}

bool BlockStream::Matches(const Kept& k, Stage stage, const BlockWeights& w) {
  const std::vector<at::Tensor> deps = Deps(stage, w);
  if (k.deps.size() != deps.size()) return false;
  for (size_t i = 0; i < deps.size(); ++i) {
    if (!k.deps[i].is_same(deps[i])) return false;
  }
  return true;
}

at::Tensor BlockStream::Cached(Stage stage, int64_t b, const BlockWeights& w) const {
  const Kept& k = kept_[stage];
  if (!k.values.defined() || !k.filled[b] || !Matches(k, stage, w)) return at::Tensor();
  return Rows(k.values, b);
}

at::Tensor BlockStream::Compute(Stage stage, int64_t b, const BlockWeights& w,
                                BlockObserver* observer, bool keep) {
  if (observer == nullptr) {  // an observer must see the attention run
    at::Tensor cached = Cached(stage, b, w);
    if (cached.defined()) return cached;
  }
  const at::Tensor hidden = Rows(*hidden_, b);
  at::Tensor out;
  switch (stage) {
    case kAttention:
      out = AttentionStage(AttentionInput(hidden, w, config_), w, config_, rope_, observer);
      break;
    case kResidual:
      out = AttentionResidual(hidden, Compute(kAttention, b, w, nullptr, keep), w);
      break;
    case kActivation:
      out = MlpActivation(MlpInput(Compute(kResidual, b, w, nullptr, keep), w, config_), w);
      break;
    case kStages: break;
  }
  if (keep) Store(stage, b, w, out);
  return out;
}

at::Tensor BlockStream::SlotInput(LinearSlot slot, int64_t b, const BlockWeights& w) {
  switch (slot) {
    case LinearSlot::kAttnIn: return AttentionInput(Rows(*hidden_, b), w, config_);
    case LinearSlot::kAttnOut: return Compute(kAttention, b, w, nullptr, true);
    case LinearSlot::kMlpIn: return MlpInput(Compute(kResidual, b, w, nullptr, true), w, config_);
    case LinearSlot::kMlpHidden: return Compute(kActivation, b, w, nullptr, true);
  }
  return at::Tensor();
}

void BlockStream::ObserveAttention(int64_t b, const BlockWeights& w, BlockObserver* observer) {
  if (!observer->ReadsProbabilities()) {
    ObserveQueriesAndKeys(AttentionInput(Rows(*hidden_, b), w, config_), w, config_, rope_, observer);
    return;
  }
  Compute(kAttention, b, w, observer, true);
}

void BlockStream::Advance(const BlockWeights& w) {
  for (int64_t b = 0; b < batches(); ++b) {
    // Both reads come before the write: they may be computed from this batch's block input. What
    // is computed here is not kept (everything is forgotten at the end).
    const at::Tensor h = Compute(kResidual, b, w, nullptr, false);
    at::Tensor act = Cached(kActivation, b, w);
    if (!act.defined()) act = MlpActivation(MlpInput(h, w, config_), w);
    Rows(*hidden_, b).copy_(MlpResidual(h, act, w));
  }
  Clear();
}

}  // namespace ptq
