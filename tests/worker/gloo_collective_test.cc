// The Gloo collective with 1-3 ranks on loopback (threads meeting through Gloo's HashStore): sums
// and gathers against the values computed directly, and an ExactSum all-reduced from shards equal
// bit for bit to one process summing everything.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <thread>

#include "common/metrics.h"
#include "core/dist/collective.h"
#include "core/stats/exact_sum.h"

#ifdef PTQ_HAVE_GLOO
#include <gloo/rendezvous/hash_store.h>

#include "worker/gloo_collective.h"
#endif

namespace ptq::worker {
namespace {

TEST(SingleProcessCollectiveTest, IsTheIdentity) {
  auto c = MakeSingleProcessCollective();
  at::Tensor t = at::arange(6, at::kLong);
  ASSERT_TRUE(c->AllReduceSum(t).ok());
  EXPECT_TRUE(at::equal(t, at::arange(6, at::kLong)));
  auto g = c->AllGatherRows(t.reshape({3, 2}), {3});
  ASSERT_TRUE(g.ok());
  EXPECT_TRUE(at::equal(*g, t.reshape({3, 2})));
  EXPECT_FALSE(c->AllGatherRows(t.reshape({3, 2}), {2}).ok());
}

#ifdef PTQ_HAVE_GLOO
// Runs fn(rank, collective) on `size` threads joined in one Gloo group.
void RunGroup(int size, const std::function<void(int, Collective&)>& fn) {
  gloo::rendezvous::HashStore store;
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r) {
    threads.emplace_back([&, r] {
      GlooOptions o;
      o.timeout = std::chrono::seconds(60);
      auto c = ConnectGloo(store, r, size, o);
      ASSERT_TRUE(c.ok()) << c.status();
      fn(r, **c);
    });
  }
  for (auto& t : threads) t.join();
}

TEST(GlooCollectiveTest, AllReduceAndGatherMatchDirectComputation) {
  for (int size : {1, 2, 3}) {
    RunGroup(size, [size](int rank, Collective& c) {
      EXPECT_EQ(c.size(), size);
      EXPECT_EQ(c.rank(), rank);
      at::Tensor ints = at::full({5}, rank + 1, at::kLong);
      ASSERT_TRUE(c.AllReduceSum(ints).ok());
      EXPECT_TRUE(at::equal(ints, at::full({5}, size * (size + 1) / 2, at::kLong)));
      at::Tensor d = at::full({2, 2}, 0.5 * rank, at::kDouble);
      ASSERT_TRUE(c.AllReduceSum(d).ok());
      EXPECT_DOUBLE_EQ(d[1][1].item<double>(), 0.25 * size * (size - 1));
      // Rank r holds r + 1 rows of uint8 [r, r, r].
      std::vector<int64_t> rows;
      for (int r = 0; r < size; ++r) rows.push_back(r + 1);
      at::Tensor mine = at::full({rank + 1, 3}, rank, at::kByte);
      auto all = c.AllGatherRows(mine, rows);
      ASSERT_TRUE(all.ok()) << all.status();
      ASSERT_EQ(all->size(0), size * (size + 1) / 2);
      int64_t row = 0;
      for (int r = 0; r < size; ++r) {
        for (int i = 0; i <= r; ++i, ++row) EXPECT_EQ((*all)[row][2].item<int>(), r);
      }
      EXPECT_TRUE(c.Barrier().ok());
      EXPECT_GT(c.bytes(), 0u);
      if (size > 1) {  // exported for Prometheus too
        EXPECT_NE(metrics::GlobalRegistry().Render().find("ptq_collective_bytes_total{op=\"all_gather\"}"),
                  std::string::npos);
      }
    });
  }
}

TEST(GlooCollectiveTest, ReduceScatterRowsGivesEachOwnerTheSumOfItsRows) {
  // Uneven plans, a rank with no rows included; rank r contributes (r + 1) * base.
  const at::Tensor base = at::arange(6 * 2, at::kLong).reshape({6, 2}) - 4;
  for (const std::vector<int64_t>& plan :
       {std::vector<int64_t>{6}, std::vector<int64_t>{2, 4}, std::vector<int64_t>{2, 0, 4},
        std::vector<int64_t>{1, 3, 2}}) {
    const int size = static_cast<int>(plan.size());
    RunGroup(size, [&](int rank, Collective& c) {
      at::Tensor t = base * (rank + 1);
      const uint64_t before = c.bytes();
      ASSERT_TRUE(c.ReduceScatterRows(t, plan).ok());
      at::Tensor expect = at::zeros_like(base);
      int64_t row0 = 0;
      for (int r = 0; r < rank; ++r) row0 += plan[r];
      if (plan[rank] > 0) {
        expect.narrow(0, row0, plan[rank]).copy_(base.narrow(0, row0, plan[rank]) * (size * (size + 1) / 2));
      }
      EXPECT_TRUE(at::equal(t, expect)) << "rank " << rank << " of " << size;
      // Each row sent once: the tensor's bytes, not an all-reduce's.
      if (size > 1) EXPECT_EQ(c.bytes() - before, base.nbytes());
      at::Tensor wrong = base.clone();
      EXPECT_FALSE(c.ReduceScatterRows(wrong, std::vector<int64_t>(size, 1)).ok());  // rows don't add up
    });
  }
}

TEST(GlooCollectiveTest, ShardedExactSumsEqualOneProcessBitForBit) {
  at::manual_seed(5);
  std::vector<at::Tensor> batches;
  for (int b = 0; b < 7; ++b) batches.push_back(at::randn({4, 4}, at::kDouble) * (b + 1) * 1e-2);
  ExactSum whole({4, 4}, at::kCPU);
  for (const auto& b : batches) whole.Add(b);
  for (int size : {2, 3}) {
    RunGroup(size, [&](int rank, Collective& c) {
      ExactSum shard({4, 4}, at::kCPU);
      for (size_t b = rank; b < batches.size(); b += size) shard.Add(batches[b]);
      ASSERT_TRUE(c.AllReduceSum(shard.high()).ok());
      ASSERT_TRUE(c.AllReduceSum(shard.low()).ok());
      EXPECT_TRUE(at::equal(shard.Value(), whole.Value()));
    });
  }
}
#else
TEST(GlooCollectiveTest, Skipped) { GTEST_SKIP() << "built without Gloo (libgloo-dev, PTQ_WITH_GLOO=ON): no multi-rank CPU collective"; }
#endif

}  // namespace
}  // namespace ptq::worker
