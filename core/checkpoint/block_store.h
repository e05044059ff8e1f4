// The finished blocks of a job, kept on disk so that nothing done is lost (issue 6): after each
// transformer block the leader saves its quantized layers (codes, scales, zeros, g_idx, the
// dequantized weight, the layer reports) to `<output>.blocks/block-NNNNN.safetensors`. A run of the
// same job (same key: options, model and calibration) that finds them skips those blocks' statistics
// and quantization: it loads the layers and only runs the block forward to rebuild the next block's
// inputs, so the result is the uninterrupted run's, byte for byte. A folder holding another job's
// blocks is cleared. The folder is removed when the checkpoint is committed, or by the coordinator
// when a job is cancelled (a failed job keeps it: submitting it again resumes).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "core/checkpoint/output_folder.h"
#include "core/quant/quantized_linear.h"

namespace ptq {

struct LayerReport;

struct StoredLayer {
  std::string name;  // the float weight's name
  QuantizedLinear q;
  double report_loss = 0, report_relative_loss = 0, report_rtn_loss = 0,
         report_rtn_relative_loss = 0, report_seconds = 0;
};

class BlockStore {
 public:
  // Opens `dir` (created if absent) for the job identified by `key`.
  static absl::StatusOr<BlockStore> Open(const std::string& dir, const std::string& key);

  // Blocks 0..n-1 saved for this key (the longest run without a gap).
  int64_t BlocksDone() const;
  // Saves block `block`'s layers in the order given (atomically: a crash leaves the old state).
  absl::Status Save(int64_t block, const std::vector<StoredLayer>& layers) const;
  // The layers of a saved block, in the order saved.
  absl::StatusOr<std::vector<StoredLayer>> Load(int64_t block) const;

  const std::string& dir() const { return dir_; }

 private:
  BlockStore(std::string dir, std::string key) : dir_(std::move(dir)), key_(std::move(key)) {}
  std::string PathOf(int64_t block) const;

  std::string dir_;
  std::string key_;
};

}  // namespace ptq
