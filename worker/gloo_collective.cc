#include "worker/gloo_collective.h"

#include <ATen/ATen.h>
#include <gloo/allgatherv.h>
#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/common/error.h>
#include <gloo/math.h>
#include <gloo/reduce.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/metric_names.h"

namespace ptq::worker {
namespace {

class GlooCollective final : public Collective {
 public:
  GlooCollective(std::shared_ptr<gloo::rendezvous::Context> context, std::chrono::milliseconds timeout)
      : context_(std::move(context)), timeout_(timeout) {}

  int rank() const override { return context_->rank; }
  int size() const override { return context_->size; }
  std::string backend() const override { return "gloo"; }

  absl::Status AllReduceSum(at::Tensor& t) override {
    if (!t.is_contiguous() || !t.device().is_cpu()) {
      return absl::InvalidArgumentError("gloo all-reduce needs a contiguous CPU tensor");
    }
    try {
      gloo::AllreduceOptions opts(context_);
      opts.setTag(next_tag_++);
      opts.setTimeout(timeout_);
      if (auto s = SetSum(opts, t, "all-reduce"); !s.ok()) return s;
      gloo::allreduce(opts);
      Count("all_reduce", t.nbytes());
    } catch (const gloo::Exception& e) {
      return absl::UnavailableError(absl::StrCat("all-reduce failed (a peer left?): ", e.what()));
    }
    return absl::OkStatus();
  }

  // One reduce to each owner of its rows (Gloo has no reduce-scatter with uneven blocks); every
  // rank sends each row once.
  absl::Status ReduceScatterRows(at::Tensor& t, const std::vector<int64_t>& rows) override {
    if (auto s = CheckRowPlan(t, rows, size()); !s.ok()) return s;
    if (!t.is_contiguous() || !t.device().is_cpu()) {
      return absl::InvalidArgumentError("gloo reduce-scatter needs a contiguous CPU tensor");
    }
    try {
      int64_t row0 = 0;
      for (int r = 0; r < size(); ++r) {
        if (rows[r] > 0) {
          at::Tensor part = t.narrow(0, row0, rows[r]);  // contiguous: whole leading rows
          gloo::ReduceOptions opts(context_);
          opts.setTag(next_tag_++);
          opts.setTimeout(timeout_);
          opts.setRoot(r);
          if (auto s = SetSum(opts, part, "reduce-scatter"); !s.ok()) return s;
          gloo::reduce(opts);
          Count("reduce_scatter", part.nbytes());
        }
        row0 += rows[r];
      }
    } catch (const gloo::Exception& e) {
      return absl::UnavailableError(absl::StrCat("reduce-scatter failed (a peer left?): ", e.what()));
    }
    ZeroRowsOfOtherRanks(t, rows, rank());
    return absl::OkStatus();
  }

  absl::StatusOr<at::Tensor> AllGatherRows(const at::Tensor& mine,
                                           const std::vector<int64_t>& rows) override {
    if (static_cast<int>(rows.size()) != size() || rows[rank()] != mine.size(0)) {
      return absl::InvalidArgumentError("gather plan does not match this rank's rows");
    }
    // Every rank sends max(rows) rows (Gloo's TCP pairs reject empty segments), then the padding
    // is cut away.
    const int64_t most = *std::max_element(rows.begin(), rows.end());
    std::vector<int64_t> shape = mine.sizes().vec();
    shape[0] = most;
    at::Tensor in = at::zeros(shape, mine.options());
    if (mine.size(0) > 0) in.narrow(0, 0, mine.size(0)).copy_(mine);
    shape[0] = most * size();
    at::Tensor padded = at::empty(shape, mine.options());
    if (most > 0) {
      try {
        gloo::AllgathervOptions opts(context_);
        opts.setTag(next_tag_++);
        opts.setTimeout(timeout_);
        opts.setInput(static_cast<uint8_t*>(in.data_ptr()), in.nbytes());  // bytes: any dtype
        opts.setOutput(static_cast<uint8_t*>(padded.data_ptr()),
                       std::vector<size_t>(size(), static_cast<size_t>(in.nbytes())));
        gloo::allgatherv(opts);
        Count("all_gather", in.nbytes());
      } catch (const gloo::Exception& e) {
        return absl::UnavailableError(absl::StrCat("all-gather failed (a peer left?): ", e.what()));
      }
    }
    std::vector<at::Tensor> parts;
    for (int r = 0; r < size(); ++r) parts.push_back(padded.narrow(0, r * most, rows[r]));
    return at::cat(parts, 0);
  }

  absl::Status Barrier() override {
    try {
      gloo::BarrierOptions opts(context_);
      opts.setTag(next_tag_++);
      opts.setTimeout(timeout_);
      gloo::barrier(opts);
    } catch (const gloo::Exception& e) {
      return absl::UnavailableError(absl::StrCat("barrier failed (a peer left?): ", e.what()));
    }
    return absl::OkStatus();
  }

 private:
  // In place: `t` is the output and (Gloo's default) the input; the sum of its dtype.
  template <typename Options>
  static absl::Status SetSum(Options& opts, at::Tensor& t, const char* what) {
    using Fn = void (*)(void*, const void*, const void*, size_t);
    switch (t.scalar_type()) {
      case at::kLong:
        opts.setOutput(t.data_ptr<int64_t>(), t.numel());
        opts.setReduceFunction(static_cast<Fn>(&gloo::sum<int64_t>));
        return absl::OkStatus();
      case at::kDouble:
        opts.setOutput(t.data_ptr<double>(), t.numel());
        opts.setReduceFunction(static_cast<Fn>(&gloo::sum<double>));
        return absl::OkStatus();
      case at::kFloat:
        opts.setOutput(t.data_ptr<float>(), t.numel());
        opts.setReduceFunction(static_cast<Fn>(&gloo::sum<float>));
        return absl::OkStatus();
      default:
        return absl::InvalidArgumentError(
            absl::StrCat("gloo ", what, ": unsupported dtype ", c10::toString(t.scalar_type())));
    }
  }

  void Count(const char* op, size_t bytes) {
    bytes_ += bytes;
    metrics::CounterFor(metrics::GlobalRegistry(), metrics::names::kCollectiveBytes, {{"op", op}})
        .Increment(static_cast<double>(bytes));
  }

  std::shared_ptr<gloo::rendezvous::Context> context_;
  std::chrono::milliseconds timeout_;
  uint32_t next_tag_ = 1;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Collective>> ConnectGloo(gloo::rendezvous::Store& store, int rank,
                                                        int size, const GlooOptions& options) {
  if (size < 1 || rank < 0 || rank >= size) {
    return absl::InvalidArgumentError(absl::StrCat("rank ", rank, " of ", size, " is not valid"));
  }
  try {
    gloo::transport::tcp::attr attr;
    attr.hostname = options.hostname;
    auto device = gloo::transport::tcp::CreateDevice(attr);
    auto context = std::make_shared<gloo::rendezvous::Context>(rank, size);
    context->setTimeout(options.timeout);
    context->connectFullMesh(store, device);
    return std::unique_ptr<Collective>(new GlooCollective(std::move(context), options.timeout));
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("rank ", rank, " of ", size, " could not join the group: ", e.what()));
  }
}

}  // namespace ptq::worker
