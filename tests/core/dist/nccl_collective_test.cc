// The NCCL collective on the GPUs this machine has: a group of one on one device, and (with two or
// more devices) two ranks in two threads, checked against sums and concatenations computed here.
// Skips where no CUDA device is visible (the build still compiles it wherever CUDA and NCCL are
// found).
#include <gtest/gtest.h>

#if defined(PTQ_HAVE_NCCL)
#include <ATen/ATen.h>
#include <cuda_runtime_api.h>

#include "core/dist/nccl_collective.h"

#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

namespace ptq {
namespace {

int CudaDevices() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}

// The coordinator's StoreSet/StoreGet, in memory, for ranks that are threads.
class MemoryRendezvous {
 public:
  NcclRendezvous Handle() {
    NcclRendezvous r;
    r.set = [this](const std::string& k, const std::string& v) {
      std::lock_guard<std::mutex> lock(mu_);
      values_[k] = v;
      changed_.notify_all();
      return absl::OkStatus();
    };
    r.get = [this](const std::string& k, std::chrono::milliseconds timeout) -> absl::StatusOr<std::string> {
      std::unique_lock<std::mutex> lock(mu_);
      if (!changed_.wait_for(lock, timeout, [&] { return values_.count(k) > 0; })) {
        return absl::DeadlineExceededError("key " + k + " not set");
      }
      return values_[k];
    };
    return r;
  }

 private:
  std::mutex mu_;
  std::condition_variable changed_;
  std::map<std::string, std::string> values_;
};

TEST(NcclCollectiveTest, GroupOfOneIsTheIdentity) {
  if (CudaDevices() < 1) GTEST_SKIP() << "no CUDA device";
  MemoryRendezvous store;
  auto group = ConnectNccl(store.Handle(), 0, 1);
  ASSERT_TRUE(group.ok()) << group.status();
  for (at::ScalarType type : {at::kLong, at::kFloat, at::kDouble}) {
    at::Tensor t = (at::arange(12) - 5).to(type).reshape({3, 4});
    const at::Tensor before = t.clone();
    ASSERT_TRUE((*group)->AllReduceSum(t).ok());
    EXPECT_TRUE(at::equal(t, before));
  }
  at::Tensor mine = at::randn({5, 3});
  auto all = (*group)->AllGatherRows(mine, {5});
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_TRUE(at::equal(*all, mine));
  EXPECT_TRUE((*group)->Barrier().ok());
  EXPECT_EQ((*group)->backend(), "nccl");
}

TEST(NcclCollectiveTest, TwoRanksSumAndGatherLikeOneProcess) {
  if (CudaDevices() < 2) GTEST_SKIP() << "needs two CUDA devices";
  MemoryRendezvous store;
  const std::vector<int64_t> rows = {3, 0};  // rank 1 holds no rows: the uneven case
  std::vector<at::Tensor> sums(2), gathers(2), scattered(2);
  std::vector<absl::Status> status(2);
  const at::Tensor a = at::randint(-1000, 1000, {7, 5}, at::kLong);
  const at::Tensor b = at::randint(-1000, 1000, {7, 5}, at::kLong);
  const at::Tensor part = at::randn({3, 4});
  std::vector<std::thread> ranks;
  for (int rank = 0; rank < 2; ++rank) {
    ranks.emplace_back([&, rank] {
      NcclOptions options;
      options.cuda_device = rank;
      options.timeout = std::chrono::seconds(60);
      auto group = ConnectNccl(store.Handle(), rank, 2, options);
      if (!group.ok()) {
        status[rank] = group.status();
        return;
      }
      sums[rank] = (rank == 0 ? a : b).clone();
      status[rank] = (*group)->AllReduceSum(sums[rank]);
      if (!status[rank].ok()) return;
      // Rows 0-2 to rank 0, 3-6 to rank 1.
      scattered[rank] = (rank == 0 ? a : b).clone();
      status[rank] = (*group)->ReduceScatterRows(scattered[rank], {3, 4});
      if (!status[rank].ok()) return;
      auto g = (*group)->AllGatherRows(rank == 0 ? part : part.narrow(0, 0, 0), rows);
      if (!g.ok()) {
        status[rank] = g.status();
        return;
      }
      gathers[rank] = *g;
    });
  }
  for (auto& t : ranks) t.join();
  for (int rank = 0; rank < 2; ++rank) {
    ASSERT_TRUE(status[rank].ok()) << "rank " << rank << ": " << status[rank];
    EXPECT_TRUE(at::equal(sums[rank], a + b));  // int64: exact
    EXPECT_TRUE(at::equal(gathers[rank], part));
    at::Tensor expect = at::zeros_like(a);
    expect.narrow(0, rank == 0 ? 0 : 3, rank == 0 ? 3 : 4).copy_((a + b).narrow(0, rank == 0 ? 0 : 3, rank == 0 ? 3 : 4));
    EXPECT_TRUE(at::equal(scattered[rank], expect));
  }
}

TEST(NcclCollectiveTest, AMissingRankZeroTimesOut) {
  if (CudaDevices() < 1) GTEST_SKIP() << "no CUDA device";
  MemoryRendezvous store;
  NcclOptions options;
  options.timeout = std::chrono::milliseconds(200);
  auto group = ConnectNccl(store.Handle(), 1, 2, options);
  EXPECT_FALSE(group.ok());
  EXPECT_EQ(group.status().code(), absl::StatusCode::kDeadlineExceeded) << group.status();
}

}  // namespace
}  // namespace ptq
#else
TEST(NcclCollectiveTest, Skipped) {
  GTEST_SKIP() << "built without NCCL (needs a CUDA toolkit with nccl.h and libnccl)";
}
#endif
