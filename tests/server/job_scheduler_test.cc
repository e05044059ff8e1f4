// The scheduler's queue, states and recovery, with a fake executor (no quantization).
#include "server/job_scheduler.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <thread>

#include "server/sqlite_job_store.h"

namespace ptq::server {
namespace {
namespace fs = std::filesystem;
using namespace std::chrono_literals;

std::string FreshPath(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("ptq_job_scheduler_test_" + name + ".db");
  for (const char* suffix : {"", "-wal", "-shm"}) fs::remove(p.string() + suffix);
  return p.string();
}

v1::JobSpec Spec(const std::string& model) {
  v1::JobSpec spec;
  spec.set_model_path(model);
  return spec;
}

// Jobs whose model is "wait..." run until cancelled; "fail..." fail; others succeed at once.
class FakeExecutor final : public JobExecutor {
 public:
  absl::Status Validate(const v1::JobSpec& spec) override {
    if (spec.model_path() == "bad") return absl::InvalidArgumentError("model_path bad: no");
    return absl::OkStatus();
  }
  absl::StatusOr<v1::JobResult> Run(const v1::JobSpec& spec, const ExecutionHooks& hooks) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      ran_.push_back(spec.model_path());
    }
    if (spec.model_path().rfind("wait", 0) == 0) {
      while (!hooks.cancel->load()) std::this_thread::sleep_for(1ms);
      return absl::CancelledError("cancelled in block 1 of 1");
    }
    if (spec.model_path().rfind("fail", 0) == 0) return absl::InternalError("it broke");
    v1::LayerProgress layer;
    layer.set_layers_done(1);
    layer.set_layers_total(1);
    layer.set_num_blocks(1);
    hooks.on_layer(layer);
    v1::BlockProgress block;
    block.set_num_blocks(1);
    hooks.on_block(block);
    v1::JobResult result;
    result.set_checkpoint_path("/out/" + spec.model_path());
    return result;
  }
  std::vector<std::string> ran() {
    std::lock_guard<std::mutex> lock(mu_);
    return ran_;
  }

 private:
  std::mutex mu_;
  std::vector<std::string> ran_;
};

// Polls until job `id` is in `state` (or 10 s pass).
v1::Job AwaitState(JobScheduler& scheduler, const std::string& id, v1::JobState state) {
  v1::Job job;
  for (int i = 0; i < 1000; ++i) {
    auto got = scheduler.Get(id);
    EXPECT_TRUE(got.ok()) << got.status();
    if (!got.ok()) return job;
    job = *got;
    if (job.state() == state) return job;
    std::this_thread::sleep_for(10ms);
  }
  ADD_FAILURE() << id << " never reached " << StateName(state) << ", is " << StateName(job.state());
  return job;
}

TEST(JobSchedulerTest, RunsJobsInSubmissionOrderAndRecordsTheOutcome) {
  auto store = SqliteJobStore::Open(FreshPath("fifo"));
  ASSERT_TRUE(store.ok());
  FakeExecutor executor;
  metrics::Registry registry;
  JobScheduler scheduler(**store, executor, registry);
  ASSERT_TRUE(scheduler.Start().ok());
  auto a = scheduler.Submit(Spec("a"));
  auto f = scheduler.Submit(Spec("fail"));
  auto b = scheduler.Submit(Spec("b"));
  ASSERT_TRUE(a.ok() && f.ok() && b.ok());
  v1::Job done = AwaitState(scheduler, b->id(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(done.result().checkpoint_path(), "/out/b");
  EXPECT_EQ(done.blocks_done(), 1);
  v1::Job failed = AwaitState(scheduler, f->id(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(failed.error(), "it broke");
  EXPECT_EQ(executor.ran(), (std::vector<std::string>{"a", "fail", "b"}));
  EXPECT_EQ(registry.GetGauge("ptq_jobs", "", {{"state", "succeeded"}}).Value(), 2);
  EXPECT_EQ(registry.GetGauge("ptq_jobs", "", {{"state", "failed"}}).Value(), 1);

  auto bad = scheduler.Submit(Spec("bad"));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(scheduler.Cancel(a->id()).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(scheduler.Get("nope").status().code(), absl::StatusCode::kNotFound);
}

TEST(JobSchedulerTest, CancelStopsTheRunningJobAndDropsAQueuedOne) {
  auto store = SqliteJobStore::Open(FreshPath("cancel"));
  ASSERT_TRUE(store.ok());
  FakeExecutor executor;
  metrics::Registry registry;
  JobScheduler scheduler(**store, executor, registry);
  ASSERT_TRUE(scheduler.Start().ok());
  auto running = scheduler.Submit(Spec("wait"));
  auto queued = scheduler.Submit(Spec("never"));
  ASSERT_TRUE(running.ok() && queued.ok());
  AwaitState(scheduler, running->id(), v1::JOB_STATE_RUNNING);
  auto watch = scheduler.StartWatch(running->id());
  ASSERT_TRUE(watch.ok());
  EXPECT_EQ(watch->job.state(), v1::JOB_STATE_RUNNING);

  auto q = scheduler.Cancel(queued->id());
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->state(), v1::JOB_STATE_CANCELLED);
  auto r = scheduler.Cancel(running->id());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->state(), v1::JOB_STATE_RUNNING);  // stops at its next layer
  AwaitState(scheduler, running->id(), v1::JOB_STATE_CANCELLED);
  auto event = watch->events->Next(5s);
  ASSERT_TRUE(event.has_value());
  EXPECT_EQ(event->state().state(), v1::JOB_STATE_CANCELLED);
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(executor.ran(), std::vector<std::string>{"wait"});
}

TEST(JobSchedulerTest, RunningJobsAreRequeuedFirstAfterReopeningTheStore) {
  const std::string path = FreshPath("recover");
  {
    // A coordinator killed mid-job left "r" RUNNING (two blocks done) and "q" queued.
    auto store = SqliteJobStore::Open(path);
    ASSERT_TRUE(store.ok());
    for (auto [id, state] : {std::pair{"q", v1::JOB_STATE_QUEUED}, {"r", v1::JOB_STATE_RUNNING},
                             {"s", v1::JOB_STATE_SUCCEEDED}}) {
      v1::Job job;
      job.set_id(id);
      job.set_state(state);
      *job.mutable_spec() = Spec(id);
      if (state == v1::JOB_STATE_RUNNING) job.set_blocks_done(2);
      ASSERT_TRUE((*store)->Insert(job).ok());
    }
  }
  auto store = SqliteJobStore::Open(path);
  ASSERT_TRUE(store.ok());
  FakeExecutor executor;
  metrics::Registry registry;
  JobScheduler scheduler(**store, executor, registry);
  ASSERT_TRUE(scheduler.Start().ok());
  AwaitState(scheduler, "r", v1::JOB_STATE_SUCCEEDED);
  AwaitState(scheduler, "q", v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(executor.ran(), (std::vector<std::string>{"r", "q"}));
  auto logs = scheduler.Logs("r", 0);
  ASSERT_TRUE(logs.ok());
  ASSERT_FALSE(logs->empty());
  EXPECT_NE((*logs)[0].text().find("re-queued"), std::string::npos) << (*logs)[0].text();
}

TEST(JobSchedulerTest, StopPutsTheRunningJobBackInTheQueueForTheNextStart) {
  const std::string path = FreshPath("stop");
  std::string id;
  {
    auto store = SqliteJobStore::Open(path);
    ASSERT_TRUE(store.ok());
    FakeExecutor executor;
    metrics::Registry registry;
    JobScheduler scheduler(**store, executor, registry);
    ASSERT_TRUE(scheduler.Start().ok());
    auto job = scheduler.Submit(Spec("wait-then-b"));
    ASSERT_TRUE(job.ok());
    id = job->id();
    AwaitState(scheduler, id, v1::JOB_STATE_RUNNING);
    scheduler.Stop();
    auto stored = (*store)->Get(id);
    ASSERT_TRUE(stored.ok());
    EXPECT_EQ(stored->state(), v1::JOB_STATE_QUEUED);
    EXPECT_EQ(scheduler.Submit(Spec("c")).status().code(), absl::StatusCode::kUnavailable);
  }
  auto store = SqliteJobStore::Open(path);
  ASSERT_TRUE(store.ok());
  FakeExecutor executor;
  metrics::Registry registry;
  JobScheduler scheduler(**store, executor, registry);
  ASSERT_TRUE(scheduler.Start().ok());
  AwaitState(scheduler, id, v1::JOB_STATE_RUNNING);
  // The scheduler marks the job RUNNING before it calls the executor: wait for the call too.
  for (int i = 0; i < 1000 && executor.ran().empty(); ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(executor.ran(), std::vector<std::string>{"wait-then-b"});
}

}  // namespace
}  // namespace ptq::server
