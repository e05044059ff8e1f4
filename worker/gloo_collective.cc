#include "worker/gloo_collective.h"

#include <ATen/ATen.h>
#include <gloo/allgatherv.h>
#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/common/error.h>
#include <gloo/math.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>

#include "absl/strings/str_cat.h"

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
      switch (t.scalar_type()) {
        case at::kLong:
          opts.setOutput(t.data_ptr<int64_t>(), t.numel());
          opts.setReduceFunction(static_cast<void (*)(void*, const void*, const void*, size_t)>(
              &gloo::sum<int64_t>));
          break;
        case at::kDouble:
          opts.setOutput(t.data_ptr<double>(), t.numel());
          opts.setReduceFunction(static_cast<void (*)(void*, const void*, const void*, size_t)>(
              &gloo::sum<double>));
          break;
        case at::kFloat:
          opts.setOutput(t.data_ptr<float>(), t.numel());
          opts.setReduceFunction(static_cast<void (*)(void*, const void*, const void*, size_t)>(
              &gloo::sum<float>));
          break;
        default:
          return absl::InvalidArgumentError(
              absl::StrCat("gloo all-reduce: unsupported dtype ", c10::toString(t.scalar_type())));
      }
      gloo::allreduce(opts);
      bytes_ += t.nbytes();
    } catch (const gloo::Exception& e) {
      return absl::UnavailableError(absl::StrCat("all-reduce failed (a peer left?): ", e.what()));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<at::Tensor> AllGatherRows(const at::Tensor& mine,
                                           const std::vector<int64_t>& rows) override {
    if (static_cast<int>(rows.size()) != size() || rows[rank()] != mine.size(0)) {
      return absl::InvalidArgumentError("gather plan does not match this rank's rows");
    }
    at::Tensor in = mine.contiguous();
    const int64_t row_elems = in.size(0) > 0 ? in.numel() / in.size(0) : 0;
    std::vector<int64_t> shape = in.sizes().vec();
    int64_t total = 0;
    std::vector<size_t> elements;
    for (int64_t r : rows) {
      total += r;
      elements.push_back(static_cast<size_t>(r * row_elems));
    }
    shape[0] = total;
    at::Tensor out = at::empty(shape, in.options());
    try {
      gloo::AllgathervOptions opts(context_);
      opts.setTag(next_tag_++);
      opts.setTimeout(timeout_);
      // Bytes, so any dtype works: element size 1.
      opts.setInput(static_cast<uint8_t*>(in.data_ptr()), in.nbytes());
      for (auto& e : elements) e *= in.element_size();
      opts.setOutput(static_cast<uint8_t*>(out.data_ptr()), elements);
      gloo::allgatherv(opts);
      bytes_ += in.nbytes();
    } catch (const gloo::Exception& e) {
      return absl::UnavailableError(absl::StrCat("all-gather failed (a peer left?): ", e.what()));
    }
    return out;
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
