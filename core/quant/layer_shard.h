// One linear layer quantized by a group of workers: the layer's rows are cut into fixed units —
// heads for BoA's q/k and the value block's v, otherwise chunks of kRowUnit rows — each rank takes a
// contiguous run of units, and the quantized rows are all-gathered. Every computation on rows
// (residual target, GPTQ, BoA, scale refinement) runs unit by unit in every configuration, one
// process included, so a row's result never depends on how many rows a BLAS call held: N workers
// produce the one-process checkpoint bit for bit.
// Device: rows are quantized on the weight's device; the losses stay there until the report's three
// numbers are read back once per rank and layer (GPTQ, RTN and the Cholesky checks have host reads of
// their own, in gptq_quantizer and rtn_quantizer). The all-gathers take tensors on that device, as
// the backend wants them (Gloo: host memory, NCCL: CUDA); the gathered losses come back to the host.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "core/dist/collective.h"
#include "core/quant/gptq_quantizer.h"

namespace ptq {

inline constexpr int64_t kRowUnit = 128;

struct RowUnit {
  int64_t row0 = 0;
  int64_t rows = 0;
};

// head_dim > 0: one unit per head of head_dim rows; otherwise chunks of kRowUnit rows.
std::vector<RowUnit> SplitRows(int64_t out_rows, int64_t head_dim);
// The units rank `rank` of `size` owns: [first, last), contiguous, balanced by count; rank 0 owns
// unit 0.
std::pair<size_t, size_t> UnitsOfRank(size_t units, int rank, int size);

struct LayerProblem {
  std::string name;
  at::Tensor weight;                // [out, in], the full-precision layer (every rank has it)
  at::Tensor hessian;               // [in, in]; undefined for rtn
  at::Tensor residual;              // [in, in] alpha D H^-1 (target W + W R); undefined: off
  std::vector<at::Tensor> h_out;    // BoA q/k: one [head_dim, head_dim] per head
  std::vector<at::Tensor> h_value;  // value block: one [in, in] per kv head
  int64_t head_dim = 0;
  // PrepareGptq(hessian, settings.gptq), computed once by a caller whose layers share the input
  // Hessian (q/k/v, gate/up); null: computed here.
  std::shared_ptr<const GptqFactor> factor;
};

struct LayerSettings {
  GptqOptions gptq;
  int64_t joint_rows = 16;  // BoA/TurboBoA rows per step
  int refine_iters = 0;
  int requant_passes = 0;  // extra passes on the refined grids; each unit keeps its best pass
  bool rtn = false;
  double value_damp = 0.01;  // damping of the value-block Hessians (problem.h_value)
  bool act_order_rows = false;  // BoA/TurboBoA q/k: a head's rows by decreasing diag(H_out)
};

struct QuantizedLayer {
  QuantizedLinear q;        // all rows, on every rank
  double loss = 0;          // the method's objective (per-head H for the value block)
  double base = 0;          // the same objective at Q = 0
  double rtn_loss = 0;      // round-to-nearest on min-max grids, same objective (the report)
};

absl::StatusOr<QuantizedLayer> QuantizeLayer(const LayerProblem& problem,
                                             const LayerSettings& settings, Collective& group);

}  // namespace ptq
