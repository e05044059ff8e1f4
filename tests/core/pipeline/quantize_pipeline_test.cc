// The one-process pipeline end to end on the demo model (few calibration windows to stay fast), and
// the bad inputs it must refuse with a clear message.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "common/tokenizer.h"
#include "tests/test_paths.h"
#include "core/model/llama_model.h"
#include "core/checkpoint/output_folder.h"
#include "core/model/perplexity.h"
#include "core/pipeline/quantize_pipeline.h"
#include "nlohmann/json.hpp"

namespace ptq {
namespace {
namespace fs = std::filesystem;

std::string TempDir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("ptq_pipeline_test_" + name);
  fs::remove_all(p);
  return p.string();
}

// Classic GPTQ (the pipeline's mechanics, cheaply); tests of other methods set theirs.
QuantizeOptions DemoOptions(const std::string& out) {
  QuantizeOptions o;
  o.method = "gptq";
  o.scale_init = "minmax";
  o.refine_iters = 0;
  o.model_dir = testing::DemoModelDir();
  o.calib_path = testing::DemoCalibText();
  o.out_dir = out;
  o.samples = 16;
  o.seq_len = 128;
  o.gptq.grid.bits = 4;
  o.gptq.group_size = 64;
  o.eval_path = testing::DemoValidText();
  o.eval_max_windows = 32;
  return o;
}

TEST(QuantizePipelineTest, GptqBeatsRtnAndOutputReproducesTheModel) {
  QuantizeOptions gptq = DemoOptions(TempDir("gptq"));
  gptq.gptq.grid.bits = 3;
  auto g = RunQuantize(gptq);
  ASSERT_TRUE(g.ok()) << g.status();
  QuantizeOptions rtn = DemoOptions(TempDir("rtn"));
  rtn.method = "rtn";
  rtn.gptq.grid.bits = 3;
  auto r = RunQuantize(rtn);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(g->perplexity_fp, r->perplexity_fp);
  EXPECT_GT(g->perplexity_quant, g->perplexity_fp);
  EXPECT_LT(g->perplexity_quant, r->perplexity_quant);
  EXPECT_EQ(g->layers.size(), 4u * 7u);
  for (const auto& l : g->layers) {
    EXPECT_GT(l.loss, 0) << l.name;
    EXPECT_LT(l.relative_loss, 0.2) << l.name;
  }
  EXPECT_TRUE(fs::exists(g->out_dir + "/config.json"));
  EXPECT_TRUE(StagingFolders(g->out_dir).empty());
  // The per-layer report: GPTQ's loss against plain rounding on the same grid, layer by layer.
  double gptq_total = 0, rtn_total = 0;
  for (const auto& l : g->layers) {
    gptq_total += l.loss;
    rtn_total += l.rtn_loss;
    EXPECT_LT(l.loss, l.rtn_loss * 1.05) << l.name;
  }
  EXPECT_LT(gptq_total, 0.8 * rtn_total);
  EXPECT_TRUE(fs::exists(g->out_dir + "/ptq_report.svg"));
  std::ifstream report_file(g->out_dir + "/ptq_report.json");
  nlohmann::json report = nlohmann::json::parse(report_file);
  ASSERT_EQ(report["layers"].size(), g->layers.size());
  EXPECT_EQ(report["layers"][5]["name"], g->layers[5].name);
  EXPECT_DOUBLE_EQ(report["layers"][5]["rtn_loss"].get<double>(), g->layers[5].rtn_loss);

  QuantizeOptions turbo = DemoOptions(TempDir("turboboa"));
  turbo.method = "turboboa";
  turbo.gptq.grid.bits = 3;
  turbo.refine_iters = 1;
  turbo.eval_fp = false;
  auto t = RunQuantize(turbo);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_LT(t->perplexity_quant, r->perplexity_quant);
  turbo.joint_rows = 5;  // does not divide head_dim 64
  turbo.force = true;
  EXPECT_FALSE(RunQuantize(turbo).ok());
}

TEST(QuantizePipelineTest, EightBitsIsNearlyLossless) {
  QuantizeOptions o = DemoOptions(TempDir("w8"));
  o.gptq.grid.bits = 8;
  auto r = RunQuantize(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_NEAR(r->perplexity_quant, r->perplexity_fp, 0.002 * r->perplexity_fp);
}

TEST(QuantizePipelineTest, NonSequentialTakesStatisticsFromTheFullPrecisionBlock) {
  QuantizeOptions seq = DemoOptions(TempDir("sequential"));
  seq.gptq.grid.bits = 3;
  seq.eval_path.clear();
  seq.keep_blocks = false;
  auto a = RunQuantize(seq);
  ASSERT_TRUE(a.ok()) << a.status();
  QuantizeOptions all_fp = DemoOptions(TempDir("non_sequential"));
  all_fp.gptq.grid.bits = 3;
  all_fp.eval_path.clear();
  all_fp.keep_blocks = false;
  all_fp.sequential = false;
  auto b = RunQuantize(all_fp);
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_EQ(a->layers.size(), b->layers.size());
  // Block 0's q/k/v see the same inputs either way (nothing in the block is quantized yet): the same
  // Hessian, the same codes, the same loss to the last bit. Its o_proj sees the attention output of
  // quantized q/k/v in one and of the full-precision ones in the other, so its problem differs.
  for (int i = 0; i < 3; ++i) EXPECT_EQ(a->layers[i].loss, b->layers[i].loss) << a->layers[i].name;
  ASSERT_NE(a->layers[3].name.find("o_proj"), std::string::npos);
  EXPECT_NE(a->layers[3].loss, b->layers[3].loss);
  EXPECT_NE(a->layers[6].loss, b->layers[6].loss);  // down_proj
}

// --residual-every N: the full-precision stream and its cross term run calibration batches 0, N, 2N,
// ... only. Three batches of 8 windows: every 3rd and every 50th both run batch 0 alone (the same
// checkpoint); every 2nd adds batch 2, every batch adds batch 1 (each a different one).
TEST(QuantizePipelineTest, ResidualEveryRunsWholeBatchesOfTheFullPrecisionStream) {
  auto weights = [](int64_t every) {
    QuantizeOptions o = DemoOptions(TempDir("residual_every_" + std::to_string(every)));
    o.method = "turboboa";
    o.scale_init.clear();
    o.refine_iters = -1;
    o.gptq.grid.bits = 2;
    o.samples = 24;
    o.seq_len = 64;
    o.batch_windows = 8;
    o.residual_every = every;
    o.eval_path.clear();
    o.keep_blocks = false;
    auto r = RunQuantize(o);
    EXPECT_TRUE(r.ok()) << r.status();
    std::ifstream in(o.out_dir + "/model.safetensors", std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  const std::string all = weights(1), even = weights(2), first = weights(3), first_too = weights(50);
  ASSERT_GT(first.size(), 1000u);
  EXPECT_TRUE(first == first_too);
  EXPECT_FALSE(first == even);
  EXPECT_FALSE(even == all);
  EXPECT_FALSE(first == all);
}

TEST(QuantizePipelineTest, RefusesToOverwriteAModelUnlessForced) {
  QuantizeOptions o = DemoOptions(TempDir("overwrite"));
  o.method = "rtn";
  o.eval_path.clear();
  ASSERT_TRUE(RunQuantize(o).ok());
  auto again = RunQuantize(o);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_NE(std::string(again.status().message()).find("--force"), std::string::npos);
  o.force = true;
  EXPECT_TRUE(RunQuantize(o).ok());
}

TEST(QuantizePipelineTest, BadInputsGiveErrorsNamingTheProblem) {
  struct Case {
    const char* name;
    std::function<void(QuantizeOptions&)> change;
    const char* words;
  };
  const std::string bad_model = TempDir("bad_model");
  fs::create_directories(bad_model);
  std::ofstream(bad_model + "/config.json") << R"({"model_type":"gpt_neox","hidden_size":8})";
  const std::string short_text = TempDir("short.txt");
  std::ofstream(short_text) << "too short";
  const Case cases[] = {
      {"missing model", [](QuantizeOptions& o) { o.model_dir = "/nonexistent/m"; }, "/nonexistent/m"},
      {"unsupported type", [&](QuantizeOptions& o) { o.model_dir = bad_model; }, "gpt_neox"},
      {"bits", [](QuantizeOptions& o) { o.gptq.grid.bits = 5; }, "bits 5"},
      {"group", [](QuantizeOptions& o) { o.gptq.group_size = 100; }, "does not divide"},
      {"method", [](QuantizeOptions& o) { o.method = "awq"; }, "awq"},
      {"block grid per channel",
       [](QuantizeOptions& o) {
         o.scale_init = "hessian-block";
         o.gptq.group_size = -1;
       },
       "hessian-block needs groups"},
      {"short calib", [&](QuantizeOptions& o) { o.calib_path = short_text; }, "shorter than one window"},
      {"missing calib", [](QuantizeOptions& o) { o.calib_path = "/nonexistent/c.txt"; }, "/nonexistent/c.txt"},
      {"missing eval", [](QuantizeOptions& o) { o.eval_path = "/nonexistent/v.txt"; }, "/nonexistent/v.txt"},
  };
  for (const auto& c : cases) {
    QuantizeOptions o = DemoOptions(TempDir(std::string("bad_") + std::to_string(&c - cases)));
    c.change(o);
    auto r = RunQuantize(o);
    ASSERT_FALSE(r.ok()) << c.name;
    EXPECT_NE(std::string(r.status().message()).find(c.words), std::string::npos)
        << c.name << ": " << r.status();
    EXPECT_FALSE(fs::exists(o.out_dir + "/config.json")) << c.name;
  }
}

}  // namespace
}  // namespace ptq

namespace ptq {
namespace {

std::string FileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

// A run stopped after block 2 keeps its finished blocks; running the same job again resumes from
// them and writes the uninterrupted run's checkpoint byte for byte (TurboBoA with the residual term,
// so the full-precision stream must be rebuilt too). Another job at the same output starts over.
TEST(QuantizePipelineTest, ARerunResumesFromTheLastFinishedBlockWithTheSameResult) {
  auto options = [](const std::string& out) {
    QuantizeOptions o = DemoOptions(out);
    o.eval_path.clear();
    o.method = "turboboa";
    o.gptq.grid.bits = 2;
    o.refine_iters = 1;
    return o;
  };
  const std::string whole = TempDir("resume_whole");
  auto a = RunQuantize(options(whole));
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->resumed_blocks, 0);
  EXPECT_FALSE(fs::exists(whole + ".blocks")) << "the block store outlived the checkpoint";

  const std::string out = TempDir("resume_split");
  for (const std::string& dir : {out, out + "2", out + "3", out + "4"}) {  // leftovers of an earlier run
    for (const char* suffix : {"", ".blocks"}) fs::remove_all(dir + suffix);
  }
  std::atomic<bool> cancel{false};
  JobHooks hooks;
  hooks.cancel = &cancel;
  std::vector<bool> reloaded_flags;  // per finished block, as the hook reports it
  hooks.on_block = [&](int64_t block, int64_t, bool reloaded) {
    reloaded_flags.push_back(reloaded);
    if (block == 1) cancel.store(true);
  };
  auto stopped = RunQuantize(options(out), hooks);
  ASSERT_EQ(stopped.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(reloaded_flags, (std::vector<bool>{false, false}));
  EXPECT_TRUE(fs::exists(out + ".blocks/block-00001.safetensors"));
  EXPECT_FALSE(fs::exists(out + ".blocks/block-00002.safetensors"));

  // Stopped a second time, after block 3: the blocks it reloaded must stay in the store (it once
  // saved them again, empty, and the third run wrote blocks 1-2 unquantized).
  reloaded_flags.clear();
  std::vector<bool> layer_reloaded;
  hooks.on_layer = [&](const LayerProgress& p) { layer_reloaded.push_back(p.reloaded); };
  hooks.on_block = [&](int64_t block, int64_t, bool reloaded) {
    reloaded_flags.push_back(reloaded);
    if (block == 2) cancel.store(true);
  };
  cancel.store(false);
  auto stopped_again = RunQuantize(options(out), hooks);
  ASSERT_EQ(stopped_again.status().code(), absl::StatusCode::kCancelled);
  // Blocks 1-2 came from the first run's store; block 3 was quantized.
  EXPECT_EQ(reloaded_flags, (std::vector<bool>{true, true, false}));
  ASSERT_EQ(layer_reloaded.size(), 21u);  // 7 linear layers a block
  for (size_t i = 0; i < layer_reloaded.size(); ++i) EXPECT_EQ(layer_reloaded[i], i < 14) << i;
  hooks.on_layer = nullptr;
  EXPECT_TRUE(fs::exists(out + ".blocks/block-00002.safetensors"));

  auto resumed = RunQuantize(options(out));
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(resumed->resumed_blocks, 3);
  EXPECT_EQ(FileBytes(out + "/model.safetensors"), FileBytes(whole + "/model.safetensors"));
  ASSERT_EQ(resumed->layers.size(), a->layers.size());
  for (size_t i = 0; i < a->layers.size(); ++i) {
    EXPECT_EQ(resumed->layers[i].name, a->layers[i].name);
    EXPECT_EQ(resumed->layers[i].loss, a->layers[i].loss) << a->layers[i].name;
  }
  EXPECT_FALSE(fs::exists(out + ".blocks"));

  // Blocks of another job (other bits) at the same output are not reused.
  cancel.store(false);
  ASSERT_EQ(RunQuantize(options(out + "2"), hooks).status().code(), absl::StatusCode::kCancelled);
  fs::rename(out + "2.blocks", out + "3.blocks");
  QuantizeOptions other = options(out + "3");
  other.gptq.grid.bits = 3;
  auto fresh = RunQuantize(other);
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_EQ(fresh->resumed_blocks, 0);
  EXPECT_TRUE(StagingFolders(out + "2").empty()) << "a cancelled run left its staging folder";

  // A damaged block in the store is redone, with the blocks after it, instead of failing the job.
  const std::string damaged = out + "4";
  fs::remove_all(damaged + ".blocks");
  cancel.store(false);
  ASSERT_EQ(RunQuantize(options(damaged), hooks).status().code(), absl::StatusCode::kCancelled);
  fs::resize_file(damaged + ".blocks/block-00001.safetensors", 100);
  auto redone = RunQuantize(options(damaged));
  ASSERT_TRUE(redone.ok()) << redone.status();
  EXPECT_EQ(redone->resumed_blocks, 1);
  EXPECT_EQ(FileBytes(damaged + "/model.safetensors"), FileBytes(whole + "/model.safetensors"));
  fs::remove_all(damaged);
}

// A writer that may not commit (the service's attempt is no longer current) leaves the output as it
// was, no staging folder, and every block in the store: the run that replaces it reloads them all
// and writes the same checkpoint.
TEST(QuantizePipelineTest, ARefusedCommitLeavesTheOutputFreeAndTheBlocksForTheRerun) {
  auto options = [](const std::string& out) {
    QuantizeOptions o = DemoOptions(out);
    o.eval_path.clear();
    return o;
  };
  const std::string whole = TempDir("commit_whole");
  ASSERT_TRUE(RunQuantize(options(whole)).ok());

  const std::string out = TempDir("commit_refused");
  fs::remove_all(out + ".blocks");
  JobHooks hooks;
  int asked = 0;
  hooks.before_commit = [&] {
    ++asked;
    return absl::AbortedError("not the coordinator's attempt");
  };
  auto refused = RunQuantize(options(out), hooks);
  ASSERT_EQ(refused.status().code(), absl::StatusCode::kAborted);
  EXPECT_NE(refused.status().message().find("not the coordinator's attempt"), absl::string_view::npos);
  EXPECT_EQ(asked, 1);
  EXPECT_FALSE(fs::exists(out)) << "a refused commit wrote the output";
  EXPECT_TRUE(StagingFolders(out).empty()) << "a refused commit left its staging folder";

  hooks.before_commit = [&] {
    ++asked;
    return absl::OkStatus();
  };
  auto rerun = RunQuantize(options(out), hooks);
  ASSERT_TRUE(rerun.ok()) << rerun.status();
  EXPECT_EQ(asked, 2);
  EXPECT_EQ(rerun->resumed_blocks, 4);  // the demo model's every block
  EXPECT_EQ(FileBytes(out + "/model.safetensors"), FileBytes(whole + "/model.safetensors"));
  EXPECT_FALSE(fs::exists(out + ".blocks"));
}

}  // namespace
}  // namespace ptq
