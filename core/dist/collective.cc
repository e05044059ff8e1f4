#include "core/dist/collective.h"

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"

namespace ptq {
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
  bool Accepts(c10::Device) const override { return true; }
};

}  // namespace

absl::Status CheckRowPlan(const at::Tensor& tensor, const std::vector<int64_t>& rows_per_rank, int size) {
  int64_t total = 0;
  bool negative = false;
  for (int64_t r : rows_per_rank) {
    negative |= r < 0;
    total += r;
  }
  if (static_cast<int>(rows_per_rank.size()) != size || tensor.dim() == 0 || negative ||
      total != tensor.size(0)) {
    return absl::InvalidArgumentError(absl::StrCat("row plan for ", rows_per_rank.size(),
                                                   " ranks does not split ", tensor.dim() ? tensor.size(0) : 0,
                                                   " rows over ", size));
  }
  return absl::OkStatus();
}

void ZeroRowsOfOtherRanks(at::Tensor& tensor, const std::vector<int64_t>& rows_per_rank, int rank) {
  int64_t row0 = 0;
  for (int r = 0; r < static_cast<int>(rows_per_rank.size()); ++r) {
    if (r != rank && rows_per_rank[r] > 0) tensor.narrow(0, row0, rows_per_rank[r]).zero_();
    row0 += rows_per_rank[r];
  }
}

absl::Status Collective::ReduceScatterRows(at::Tensor& tensor, const std::vector<int64_t>& rows_per_rank) {
  if (auto s = CheckRowPlan(tensor, rows_per_rank, size()); !s.ok()) return s;
  if (auto s = AllReduceSum(tensor); !s.ok()) return s;
  ZeroRowsOfOtherRanks(tensor, rows_per_rank, rank());
  return absl::OkStatus();
}

std::unique_ptr<Collective> MakeSingleProcessCollective() {
  return std::make_unique<SingleProcessCollective>();
}

}  // namespace ptq
