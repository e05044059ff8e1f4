// The pipeline run by a group of 2 and 3 ranks (threads joined by Gloo over loopback) writes the
// checkpoint one process writes, byte for byte: GPTQ and TurboBoA with all its features (value
// block, residual correction, scale refinement). Token shards are whole batches, statistics are
// ExactSums, rows are quantized in fixed units (core/quant/layer_shard.h).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <thread>

#include "tests/test_paths.h"
#include "core/pipeline/quantize_pipeline.h"

#ifdef PTQ_HAVE_GLOO
#include <gloo/rendezvous/hash_store.h>

#include "worker/gloo_collective.h"
#endif

namespace ptq {
namespace {
namespace fs = std::filesystem;

std::string ReadAll(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

QuantizeOptions Options(const std::string& method, const std::string& out) {
  QuantizeOptions o;
  o.model_dir = testing::DemoModelDir();
  o.calib_path = testing::DemoCalibText();
  o.out_dir = out;
  o.method = method;
  o.samples = 24;  // three batches of 8 windows
  o.seq_len = 64;
  o.batch_windows = 8;
  o.gptq.grid.bits = method == "gptq" ? 3 : 2;
  o.gptq.group_size = 64;
  if (method == "turboboa") {
    o.refine_iters = 1;
    o.value_block = true;  // its per-head sums are sharded and reduced too
    o.requant_passes = 1;  // per-unit choice between passes: must not depend on the group size
    o.residual_alpha = 0.25;
    // The full-precision stream on batches 0 and 2: with three ranks the middle one has none.
    o.residual_every = 2;
    o.qk_hessian = "softmax";  // its per-head sums are all-reduced like the others
  }
  return o;
}

#ifdef PTQ_HAVE_GLOO
// The same files in both folders (a file only one of them has is a difference too) with the same
// bytes, reports aside (their timings differ).
void ExpectSameFiles(const std::string& a, const std::string& b) {
  auto names = [](const std::string& dir) {
    std::set<std::string> out;
    for (const auto& entry : fs::directory_iterator(dir)) {
      const std::string file = entry.path().filename();
      if (file != "ptq_report.json" && file != "ptq_report.svg") out.insert(file);
    }
    return out;
  };
  const std::set<std::string> in_a = names(a);
  EXPECT_EQ(in_a, names(b)) << a << " and " << b << " hold different files";
  for (const std::string& file : in_a) {
    EXPECT_TRUE(ReadAll(fs::path(a) / file) == ReadAll(fs::path(b) / file)) << file << " differs";
  }
  EXPECT_GE(in_a.size(), 2u);
}

TEST(DistributedPipelineTest, AnyGroupSizeWritesTheOneProcessCheckpoint) {
  const fs::path tmp = fs::temp_directory_path() / "ptq_distributed_test";
  for (const std::string method : {"gptq", "turboboa"}) {
    QuantizeOptions alone = Options(method, (tmp / (method + "_1")).string());
    fs::remove_all(alone.out_dir);
    auto reference = RunQuantize(alone);
    ASSERT_TRUE(reference.ok()) << reference.status();
    for (int size : {2, 3}) {
      const std::string out = (tmp / (method + "_" + std::to_string(size))).string();
      fs::remove_all(out);
      gloo::rendezvous::HashStore store;
      std::vector<absl::Status> results(size);
      std::vector<std::thread> ranks;
      for (int r = 0; r < size; ++r) {
        ranks.emplace_back([&, r] {
          auto group = worker::ConnectGloo(store, r, size);
          if (!group.ok()) {
            results[r] = group.status();
            return;
          }
          JobHooks hooks;
          hooks.group = group->get();
          QuantizeOptions o = Options(method, out);
          results[r] = RunQuantize(o, hooks).status();
        });
      }
      for (auto& t : ranks) t.join();
      for (int r = 0; r < size; ++r) ASSERT_TRUE(results[r].ok()) << "rank " << r << ": " << results[r];
      ExpectSameFiles(alone.out_dir, out);
    }
  }
}
#else
TEST(DistributedPipelineTest, Skipped) { GTEST_SKIP() << "built without Gloo (libgloo-dev, PTQ_WITH_GLOO=ON): no multi-rank CPU collective"; }
#endif

}  // namespace
}  // namespace ptq
