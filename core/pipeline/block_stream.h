// One calibration stream's way through one decoder block, one stage at a time. Quantizing a block
// in order needs each slot's input computed on the layers before it already quantized; instead of
// starting over at the block input for every slot, the stream keeps each stage's output for all of
// its windows (the input of o_proj, the residual after attention, the MLP activation) and the next
// slot continues from there. A kept stage remembers the weights it was computed with and is
// recomputed when they have changed (a layer was quantized since), so a caller cannot read a stale
// one. Every stage runs batch by batch with the same ops as BlockForward, so the values are the
// same bits as a forward that starts over.
//
// Memory: the stages kept by all streams sharing a StageCacheBudget stay under its limit; a stage
// that does not fit is not kept and is recomputed from the nearest kept one (or the block input)
// when it is read. The attention output is dropped once the residual after it is complete.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/TensorOptions.h>

#include "common/model_config.h"
#include "core/model/block_weights.h"
#include "core/model/llama_block.h"
#include "core/model/rope.h"

namespace ptq {

// The memory of the kept stages of several streams: at most `limit_bytes` together. A stage that
// is dropped gives its buffer back here, and the buffer is held for the next stage of the same size
// (every block's stages have the same shapes), so each block does not page-fault its stages in anew:
// on the 2-core VM that was most of a run's page faults and system time (docs/results.md). Held
// buffers count as used; they are freed when a new buffer would not fit otherwise.
class StageCacheBudget {
 public:
  explicit StageCacheBudget(int64_t limit_bytes) : limit_(limit_bytes) {}
  // A buffer of `shape`, held or new; undefined when it does not fit. Its contents are unspecified.
  at::Tensor Take(at::IntArrayRef shape, const at::TensorOptions& options);
  // Gives a buffer from Take back; it is held for reuse.
  void Give(at::Tensor buffer);
  // Frees the held buffers (when no stage will be kept again).
  void FreeHeld();
  // Bytes taken and not given back, and bytes held; used() counts both.
  int64_t taken() const { return used_ - held_bytes_; }
  int64_t used() const { return used_; }
  int64_t peak() const { return peak_; }

 private:
  int64_t limit_;
  int64_t used_ = 0;
  int64_t held_bytes_ = 0;
  int64_t peak_ = 0;
  std::vector<at::Tensor> held_;  // flat buffers given back
};

class BlockStream {
 public:
  // hidden: [windows, tokens, hidden_size], the block input (Advance overwrites it with the block
  // output); batch: windows per forward call. The stream keeps pointers to all arguments.
  BlockStream(at::Tensor* hidden, const ModelConfig& config, const RopeTable& rope, int64_t batch,
              StageCacheBudget* budget);
  ~BlockStream();
  BlockStream(const BlockStream&) = delete;
  BlockStream& operator=(const BlockStream&) = delete;

  int64_t batches() const;
  // `slot`'s input for batch b on the block weights w (whose layers before `slot` are final for the
  // caller's purpose): [windows of b, tokens, slot input size].
  at::Tensor SlotInput(LinearSlot slot, int64_t b, const BlockWeights& w);
  // Runs attention for batch b on w with `observer` told OnAttention (its output is kept as the
  // kAttnOut input when w's q/k/v are the ones that input is later read with); only the queries
  // and keys when the observer does not read the probabilities.
  void ObserveAttention(int64_t b, const BlockWeights& w, BlockObserver* observer);
  // hidden <- the block's output on w, batch by batch; forgets every kept stage.
  void Advance(const BlockWeights& w);
  // Forgets every kept stage (a new block).
  void Clear();

 private:
  // The stages that are kept: the kAttnOut input, the residual h after o_proj, the kMlpHidden input.
  enum Stage { kAttention = 0, kResidual = 1, kActivation = 2, kStages = 3 };
  struct Kept {
    at::Tensor values;              // [windows, tokens, dim]; undefined: not kept (over budget)
    std::vector<at::Tensor> deps;   // the weights it was computed with (compared by identity)
    std::vector<bool> filled;       // per batch
    int64_t filled_count = 0;
  };
  static std::vector<at::Tensor> Deps(Stage stage, const BlockWeights& w);
  int64_t Dim(Stage stage) const;
  static bool Matches(const Kept& k, Stage stage, const BlockWeights& w);
  at::Tensor Rows(const at::Tensor& t, int64_t b) const;
  // The kept output of `stage` for batch b on w; undefined when it is not kept.
  at::Tensor Cached(Stage stage, int64_t b, const BlockWeights& w) const;
  // Stage `stage`'s output for batch b on w, kept or computed from the stage before it (and then
  // kept when `keep` and the budget allow).
  at::Tensor Compute(Stage stage, int64_t b, const BlockWeights& w, BlockObserver* observer, bool keep);
  void Store(Stage stage, int64_t b, const BlockWeights& w, const at::Tensor& out);
  void Release(Stage stage);

  at::Tensor* hidden_;
  const ModelConfig& config_;
  const RopeTable& rope_;
  const int64_t batch_;
  StageCacheBudget* budget_;
  std::array<Kept, kStages> kept_;
};

}  // namespace ptq
