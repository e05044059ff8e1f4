// The collectives a group of workers needs to quantize one block together: sum the calibration
// statistics of their token shards, and gather the rows each quantized. One small interface with
// real backends: Gloo over TCP for CPU tensors (worker/gloo_collective.h) and, on CUDA builds, NCCL
// for CUDA tensors; a group of one needs neither. Calls are collective: every rank makes the same
// calls in the same order. Errors (a peer that died, a timeout) come back as UNAVAILABLE.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace ptq {

class Collective {
 public:
  virtual ~Collective() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backend() const = 0;
  // Elementwise sum over ranks, in place. int64, float32 or float64; contiguous.
  virtual absl::Status AllReduceSum(at::Tensor& tensor) = 0;
  // Concatenates every rank's `mine` along dim 0, in rank order. Ranks may hold different numbers of
  // rows (`rows_per_rank`, the same list on every rank); the other dims and the dtype must agree.
  virtual absl::StatusOr<at::Tensor> AllGatherRows(const at::Tensor& mine,
                                                   const std::vector<int64_t>& rows_per_rank) = 0;
  // Elementwise sum over ranks of the rows each rank owns: dim 0 of `tensor` is split into
  // consecutive runs of `rows_per_rank[r]` rows (the same list on every rank); afterwards this rank's
  // own run holds the sum over ranks and every other row is zero. For statistics only one rank reads
  // (the value block's per-head Hessians): each element crosses the network once instead of an
  // all-reduce's twice. The default is an all-reduce followed by the zeroing.
  virtual absl::Status ReduceScatterRows(at::Tensor& tensor, const std::vector<int64_t>& rows_per_rank);
  virtual absl::Status Barrier() = 0;
  // Whether tensors on `device` may be passed as they are. Gloo reads host memory only; NCCL takes
  // CUDA tensors (and stages host ones); a group of one moves nothing.
  virtual bool Accepts(c10::Device device) const { return device.is_cpu(); }
  // Bytes this rank handed to collectives (for metrics and the scaling model).
  uint64_t bytes() const { return bytes_; }

 protected:
  uint64_t bytes_ = 0;
};

// For backends' ReduceScatterRows: InvalidArgument unless `rows_per_rank` has `size` non-negative
// entries that add up to dim 0 of `tensor`; and the zeroing of the rows other ranks own.
absl::Status CheckRowPlan(const at::Tensor& tensor, const std::vector<int64_t>& rows_per_rank, int size);
void ZeroRowsOfOtherRanks(at::Tensor& tensor, const std::vector<int64_t>& rows_per_rank, int rank);

// A group of one: sums are the identity, a gather returns `mine`.
std::unique_ptr<Collective> MakeSingleProcessCollective();

}  // namespace ptq
