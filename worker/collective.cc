#include "worker/collective.h"

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"

namespace ptq::worker {
namespace {

class SingleProcessCollective final : public Collective {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string backend() const override { return "none"; }
  absl::Status AllReduceSum(at::Tensor&) override { return absl::OkStatus(); }
  absl::StatusOr<at::Tensor> AllGatherRows(const at::Tensor& mine,
                                           const std::vector<int64_t>& rows) override {
    if (rows.size() != 1 || rows[0] != mine.size(0)) {
      return absl::InvalidArgumentError(absl::StrCat("gather of ", mine.size(0),
                                                     " rows with a plan for ", rows.size(), " ranks"));
    }
    return mine;
  }
  absl::Status Barrier() override { return absl::OkStatus(); }
};

}  // namespace

std::unique_ptr<Collective> MakeSingleProcessCollective() {
  return std::make_unique<SingleProcessCollective>();
}

}  // namespace ptq::worker
