// `ptq submit/watch/status/list/cancel/logs` as a user runs them, against a coordinator started in
// this process on a loopback port: ids on stdout, live progress, exit codes, one-line errors.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include "common/metrics.h"
#include "nlohmann/json.hpp"
#include "server/coordinator.h"
#include "tests/cli_run.h"
#include "tests/test_paths.h"

namespace {
namespace fs = std::filesystem;

using ptq::testing::CliRun;
using ptq::testing::RunPtq;

std::string TempPath(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("ptq_service_cli_test_" + name);
  for (const char* suffix : {"", "-wal", "-shm"}) fs::remove_all(p.string() + suffix);
  return p.string();
}

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

class PtqServiceCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ptq::server::CoordinatorOptions options;
    options.listen_address = "127.0.0.1:0";
    options.store_path = TempPath("store.db");
    auto c = ptq::server::Coordinator::Start(options, registry_);
    ASSERT_TRUE(c.ok()) << c.status();
    coordinator_ = *std::move(c);
    flag_ = " --insecure --coordinator 127.0.0.1:" + std::to_string(coordinator_->port());
  }

  std::string SubmitArgs(const std::string& out, const std::string& extra) {
    return "submit" + flag_ + " --model " + ptq::testing::DemoModelDir() + " --calib " +
           ptq::testing::DemoCalibText() + " --out " + out + " --group-size 64 " + extra;
  }

  ptq::metrics::Registry registry_;
  std::unique_ptr<ptq::server::Coordinator> coordinator_;
  std::string flag_;
};

TEST_F(PtqServiceCliTest, SubmitWatchStatusListLogs) {
  const std::string out = TempPath("out");
  // Long enough (several seconds) that `watch` attaches while the job runs.
  CliRun submit = RunPtq(SubmitArgs(out, "--method gptq --samples 64 --seq-len 128"), false);
  ASSERT_EQ(submit.exit_code, 0) << submit.out;
  const std::string id = Trim(submit.out);
  ASSERT_EQ(id.rfind("job-", 0), 0u) << submit.out;

  CliRun watch = RunPtq("watch " + id + flag_, false);
  EXPECT_EQ(watch.exit_code, 0) << watch.out;
  EXPECT_NE(watch.out.find("block 4/4"), std::string::npos) << watch.out;
  EXPECT_NE(watch.out.find("28/28 layers"), std::string::npos) << watch.out;
  EXPECT_NE(watch.out.find("ETA"), std::string::npos) << watch.out;
  EXPECT_NE(watch.out.find("SUCCEEDED"), std::string::npos) << watch.out;
  EXPECT_NE(watch.out.find("checkpoint: " + out), std::string::npos) << watch.out;
  EXPECT_TRUE(fs::exists(out + "/config.json"));

  CliRun status = RunPtq("status --json " + id + flag_, false);
  ASSERT_EQ(status.exit_code, 0) << status.out;
  auto j = nlohmann::json::parse(status.out);
  EXPECT_EQ(j["id"], id);
  EXPECT_EQ(j["state"], "JOB_STATE_SUCCEEDED");
  EXPECT_EQ(j["spec"]["samples"], "64");  // int64 is a string in protobuf's JSON mapping
  EXPECT_EQ(j["result"]["checkpoint_path"], out);

  CliRun list = RunPtq("list" + flag_, false);
  ASSERT_EQ(list.exit_code, 0);
  EXPECT_NE(list.out.find(id + "  SUCCEEDED"), std::string::npos) << list.out;

  CliRun logs = RunPtq("logs " + id + flag_, false);
  ASSERT_EQ(logs.exit_code, 0);
  EXPECT_NE(logs.out.find("succeeded: checkpoint " + out), std::string::npos) << logs.out;

  CliRun cancel = RunPtq("cancel " + id + flag_, true);
  EXPECT_NE(cancel.exit_code, 0);
  EXPECT_EQ(cancel.out, "ptq: error: job " + id + " has already finished (SUCCEEDED)\n");
}

TEST_F(PtqServiceCliTest, CancelledJobsMakeWatchExitWithThree) {
  CliRun first = RunPtq(SubmitArgs(TempPath("long"), "--samples 128 --seq-len 256"), false);
  CliRun second = RunPtq(SubmitArgs(TempPath("queued"), "--samples 8 --seq-len 64"), false);
  ASSERT_EQ(first.exit_code, 0);
  ASSERT_EQ(second.exit_code, 0);
  const std::string running = Trim(first.out), queued = Trim(second.out);
  CliRun cancel_queued = RunPtq("cancel " + queued + flag_, false);
  EXPECT_EQ(cancel_queued.exit_code, 0);
  EXPECT_EQ(cancel_queued.out, "job " + queued + " CANCELLED\n");
  CliRun cancel_running = RunPtq("cancel " + running + flag_, false);
  EXPECT_EQ(cancel_running.exit_code, 0);
  for (const std::string& id : {queued, running}) {
    CliRun watch = RunPtq("watch " + id + flag_, true);
    EXPECT_EQ(watch.exit_code, 3) << watch.out;
    EXPECT_NE(watch.out.find("CANCELLED"), std::string::npos) << watch.out;
  }
}

TEST_F(PtqServiceCliTest, ErrorsAreOneReadableLine) {
  const std::pair<std::string, std::string> cases[] = {
      {SubmitArgs(TempPath("bad"), "--bits 5"), "ptq: error: unsupported bits 5 (use 2, 3, 4 or 8)\n"},
      {"status job-nope" + flag_, "ptq: error: no job job-nope\n"},
      {"watch job-nope" + flag_, "ptq: error: no job job-nope\n"},
  };
  // Flags of `ptq quantize`'s own process: refused by name, not dropped.
  for (const std::string flag : {"--device cpu", "--forward-cache-mib 8", "--max-shard-mib 1"}) {
    CliRun r = RunPtq(SubmitArgs(TempPath("local"), flag), true);
    EXPECT_EQ(r.exit_code, 1) << flag;
    const std::string name = flag.substr(0, flag.find(' '));
    EXPECT_EQ(r.out.rfind("ptq: error: " + name + " is a setting of `ptq quantize`'s own process", 0),
              0u)
        << r.out;
    EXPECT_FALSE(fs::exists(TempPath("local"))) << flag;
  }
  for (const auto& [args, expected] : cases) {
    CliRun r = RunPtq(args, true);
    EXPECT_EQ(r.exit_code, 1) << args;
    EXPECT_EQ(r.out, expected) << args;
  }
  CliRun unreachable = RunPtq("list --insecure --coordinator 127.0.0.1:1", true);
  EXPECT_EQ(unreachable.exit_code, 1);
  EXPECT_EQ(unreachable.out.rfind("ptq: error: coordinator 127.0.0.1:1: ", 0), 0u) << unreachable.out;
  EXPECT_EQ(unreachable.out.find('\n'), unreachable.out.size() - 1) << unreachable.out;
}

}  // namespace
