// The NCCL collective. Without a GPU: the unique-id exchange (keys scoped by attempt, a reused
// prefix refused, a missing rank 0 timing out) through an in-memory rendezvous, and ConnectNccl's
// argument checks. With GPUs: a group of one on one device (CPU and CUDA tensors), and with two or
// more devices two ranks in two threads, checked against sums and concatenations computed here.
// Built wherever CUDA and NCCL are found; GPU cases skip with the reason elsewhere.
#include <gtest/gtest.h>

#if defined(PTQ_HAVE_NCCL)
#include <ATen/ATen.h>
#include <cuda_runtime_api.h>
#include <nccl.h>

#include "core/dist/nccl_collective.h"

#include <algorithm>
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
  std::map<std::string, std::string> values() {
    std::lock_guard<std::mutex> lock(mu_);
    return values_;
  }

 private:
  std::mutex mu_;
  std::condition_variable changed_;
  std::map<std::string, std::string> values_;
};

constexpr size_t kIdBytes = sizeof(ncclUniqueId::internal);

std::string FakeId(char fill) { return std::string(kIdBytes, fill); }

absl::StatusOr<std::string> Exchange(MemoryRendezvous& store, int rank, const std::string& prefix,
                                     std::chrono::milliseconds timeout, char fill = 'x') {
  return ExchangeNcclUniqueId(store.Handle(), rank, prefix, kIdBytes, timeout,
                              [&]() -> absl::StatusOr<std::string> { return FakeId(fill); });
}

TEST(NcclRendezvousTest, KeysAreScopedByTheAttemptsPrefix) {
  MemoryRendezvous store;
  // Attempt 1 published its id and died.
  ASSERT_TRUE(Exchange(store, 0, "job/7/attempt/1/", std::chrono::seconds(1), 'A').ok());
  // Attempt 2's rank 1 comes first: it must not see attempt 1's id, only attempt 2's.
  EXPECT_EQ(Exchange(store, 1, "job/7/attempt/2/", std::chrono::milliseconds(50)).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  absl::StatusOr<std::string> seen = absl::UnknownError("not run");
  std::thread peer([&] { seen = Exchange(store, 1, "job/7/attempt/2/", std::chrono::seconds(20)); });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  auto mine = Exchange(store, 0, "job/7/attempt/2/", std::chrono::seconds(1), 'B');
  peer.join();
  ASSERT_TRUE(mine.ok()) << mine.status();
  ASSERT_TRUE(seen.ok()) << seen.status();
  EXPECT_EQ(*seen, FakeId('B'));
  EXPECT_EQ(*mine, FakeId('B'));
  const auto values = store.values();
  EXPECT_EQ(values.at(NcclUniqueIdKey("job/7/attempt/1/")), FakeId('A'));
  EXPECT_EQ(values.at(NcclUniqueIdKey("job/7/attempt/2/")), FakeId('B'));
  EXPECT_NE(NcclUniqueIdKey("job/7/attempt/1/"), NcclUniqueIdKey("job/7/attempt/2/"));
}

TEST(NcclRendezvousTest, RankZeroRefusesAPrefixAnEarlierAttemptUsed) {
  MemoryRendezvous store;
  ASSERT_TRUE(Exchange(store, 0, "job/1/attempt/1/", std::chrono::seconds(1), 'A').ok());
  bool made = false;
  auto again = ExchangeNcclUniqueId(store.Handle(), 0, "job/1/attempt/1/", kIdBytes,
                                    std::chrono::seconds(1), [&]() -> absl::StatusOr<std::string> {
                                      made = true;
                                      return FakeId('B');
                                    });
  EXPECT_EQ(again.status().code(), absl::StatusCode::kFailedPrecondition) << again.status();
  EXPECT_FALSE(made);
  EXPECT_EQ(store.values().at(NcclUniqueIdKey("job/1/attempt/1/")), FakeId('A'));  // not overwritten
}

TEST(NcclRendezvousTest, RefusesAnEmptyPrefixAndAMalformedId) {
  MemoryRendezvous store;
  EXPECT_EQ(Exchange(store, 0, "", std::chrono::seconds(1)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Exchange(store, 1, "", std::chrono::seconds(1)).status().code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(store.Handle().set(NcclUniqueIdKey("p/"), "short").ok());
  EXPECT_EQ(Exchange(store, 1, "p/", std::chrono::seconds(1)).status().code(), absl::StatusCode::kDataLoss);
  auto wrong_size = ExchangeNcclUniqueId(store.Handle(), 0, "q/", kIdBytes, std::chrono::seconds(1),
                                         []() -> absl::StatusOr<std::string> { return "short"; });
  EXPECT_EQ(wrong_size.status().code(), absl::StatusCode::kInternal);
}

TEST(NcclRendezvousTest, AMissingRankZeroTimesOut) {
  MemoryRendezvous store;
  const auto start = std::chrono::steady_clock::now();
  auto got = Exchange(store, 1, "job/2/attempt/1/", std::chrono::milliseconds(200));
  EXPECT_EQ(got.status().code(), absl::StatusCode::kDeadlineExceeded) << got.status();
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(200));
}

TEST(NcclCollectiveTest, ConnectRefusesBadArgumentsAndMissingDevices) {
  MemoryRendezvous store;
  NcclOptions options;
  options.key_prefix = "job/3/attempt/1/";
  options.timeout = std::chrono::milliseconds(200);
  EXPECT_EQ(ConnectNccl(store.Handle(), 2, 2, options).status().code(), absl::StatusCode::kInvalidArgument);
  NcclOptions no_prefix = options;
  no_prefix.key_prefix.clear();
  EXPECT_EQ(ConnectNccl(store.Handle(), 0, 1, no_prefix).status().code(), absl::StatusCode::kInvalidArgument);
  const int devices = CudaDevices();
  NcclOptions missing = options;
  missing.cuda_device = std::max(devices, 1);
  auto group = ConnectNccl(store.Handle(), 0, 1, missing);
  // No usable CUDA at all: FailedPrecondition; a device index past the last one: InvalidArgument.
  EXPECT_EQ(group.status().code(), devices == 0 ? absl::StatusCode::kFailedPrecondition
                                                : absl::StatusCode::kInvalidArgument)
      << group.status();
  EXPECT_TRUE(store.values().empty());  // nothing was published for a group that cannot form
}

NcclOptions Options(int device, const std::string& prefix) {
  NcclOptions options;
  options.cuda_device = device;
  options.timeout = std::chrono::seconds(60);
  options.key_prefix = prefix;
  return options;
}

TEST(NcclCollectiveTest, GroupOfOneIsTheIdentity) {
  if (CudaDevices() < 1) GTEST_SKIP() << "no CUDA device";
  MemoryRendezvous store;
  auto group = ConnectNccl(store.Handle(), 0, 1, Options(0, "job/4/attempt/1/"));
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

#if defined(PTQ_TORCH_CUDA)
TEST(NcclCollectiveTest, GroupOfOneOnCudaTensorsAfterPendingAtenWork) {
  if (CudaDevices() < 1 || !at::hasCUDA()) GTEST_SKIP() << "no CUDA device visible to libtorch";
  MemoryRendezvous store;
  auto group = ConnectNccl(store.Handle(), 0, 1, Options(0, "job/5/attempt/1/"));
  ASSERT_TRUE(group.ok()) << group.status();
  const auto cuda = at::TensorOptions().device(at::kCUDA, 0);
  // Produced by ATen kernels still queued on ATen's stream when the collective starts: a
  // collective that did not wait for them would read unfinished data.
  at::Tensor big = at::randn({2048, 2048}, cuda.dtype(at::kDouble));
  at::Tensor t = at::matmul(big, big).sum(1);
  const at::Tensor want = t.clone();
  ASSERT_TRUE((*group)->AllReduceSum(t).ok());
  EXPECT_TRUE(at::equal(t, want));
  at::Tensor rows = at::matmul(big.narrow(0, 0, 7), big).to(at::kFloat);
  auto gathered = (*group)->AllGatherRows(rows, {7});
  ASSERT_TRUE(gathered.ok()) << gathered.status();
  EXPECT_TRUE(gathered->is_cuda());
  EXPECT_TRUE(at::equal(*gathered, rows));
  at::Tensor scatter = at::arange(20, cuda.dtype(at::kLong)).reshape({4, 5});
  const at::Tensor scatter_want = scatter.clone();
  ASSERT_TRUE((*group)->ReduceScatterRows(scatter, {4}).ok());
  EXPECT_TRUE(at::equal(scatter, scatter_want));
  // Neither CPU nor this rank's device: refused, and the group stays usable.
  at::Tensor meta = at::empty({3}, at::TensorOptions().device(at::kMeta).dtype(at::kFloat));
  EXPECT_EQ((*group)->AllReduceSum(meta).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE((*group)->Barrier().ok());
}

TEST(NcclCollectiveTest, ATensorOnAnotherDeviceIsRefused) {
  if (CudaDevices() < 2 || !at::hasCUDA()) GTEST_SKIP() << "needs two CUDA devices";
  MemoryRendezvous store;
  auto group = ConnectNccl(store.Handle(), 0, 1, Options(0, "job/6/attempt/1/"));
  ASSERT_TRUE(group.ok()) << group.status();
  at::Tensor other = at::ones({4}, at::TensorOptions().device(at::kCUDA, 1));
  const absl::Status s = (*group)->AllReduceSum(other);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("cuda:1"), std::string::npos) << s;
}
#endif

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
      auto group = ConnectNccl(store.Handle(), rank, 2, Options(rank, "job/8/attempt/1/"));
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
  NcclOptions options = Options(0, "job/9/attempt/1/");
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
