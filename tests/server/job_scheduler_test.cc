// The scheduler's queue, states and recovery, with a fake executor (no quantization).
#include "server/job_scheduler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
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

// Jobs whose model is "wait..." run until cancelled; "fail..." fail; "reload-K-of-M" reload K of
// M blocks (as a resumed pipeline reports them) and quantize the rest; others succeed at once.
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
    int reloaded = 0, num_blocks = 0;
    if (std::sscanf(spec.model_path().c_str(), "reload-%d-of-%d", &reloaded, &num_blocks) == 2) {
      for (int b = 0; b < num_blocks; ++b) {
        v1::BlockProgress block;
        block.set_block(b);
        block.set_num_blocks(num_blocks);
        block.set_reloaded(b < reloaded);
        v1::LayerProgress layer;  // one layer a block
        layer.set_block(b);
        layer.set_num_blocks(num_blocks);
        layer.set_reloaded(b < reloaded);
        hooks.on_layer(layer);
        hooks.on_block(block);
      }
      return v1::JobResult();
    }
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

// The log says where each run of an interrupted job starts, from what the run reports: the blocks
// it reloads (saved by the earlier run), not from what the store recorded when it stopped.
TEST(JobSchedulerTest, TheLogSaysFromWhichBlockAnInterruptedJobResumes) {
  const std::string path = FreshPath("resume_messages");
  {
    // Killed mid-job: the store recorded 2 of 4 blocks; the block store held 3 (the third was saved
    // and the coordinator killed before it recorded it), and for another job none.
    auto store = SqliteJobStore::Open(path);
    ASSERT_TRUE(store.ok());
    for (const char* id : {"reload-3-of-4", "reload-0-of-4", "reload-4-of-4"}) {
      v1::Job job;
      job.set_id(id);
      job.set_state(v1::JOB_STATE_RUNNING);
      *job.mutable_spec() = Spec(id);
      job.set_blocks_done(2);
      job.set_num_blocks(4);
      ASSERT_TRUE((*store)->Insert(job).ok());
    }
  }
  auto store = SqliteJobStore::Open(path);
  ASSERT_TRUE(store.ok());
  FakeExecutor executor;
  metrics::Registry registry;
  JobScheduler scheduler(**store, executor, registry);
  ASSERT_TRUE(scheduler.Start().ok());
  const std::pair<const char*, const char*> expected[] = {
      {"reload-3-of-4", "resumed from block 4 of 4: blocks 1-3 were saved by an earlier run and are "
                        "reloaded, not quantized again"},
      {"reload-0-of-4", "no block of the earlier run was saved: quantizing from block 1 of 4"},
      {"reload-4-of-4", "resumed: all 4 blocks were saved by an earlier run and are reloaded, not "
                        "quantized again"},
  };
  for (const auto& [id, says] : expected) {
    AwaitState(scheduler, id, v1::JOB_STATE_SUCCEEDED);
    auto logs = scheduler.Logs(id, 0);
    ASSERT_TRUE(logs.ok());
    std::vector<std::string> text;
    for (const auto& line : *logs) text.push_back(line.text());
    ASSERT_GE(text.size(), 3u);
    EXPECT_EQ(text[0], "coordinator restarted while the job was running (2 of 4 blocks finished); "
                       "re-queued: it resumes from its last saved block, not from scratch");
    EXPECT_EQ(text[1], "started");
    ASSERT_EQ(std::count(text.begin(), text.end(), says), 1) << id;
    // Said after the reloaded layers' lines, before any quantized layer's.
    const auto at = std::find(text.begin(), text.end(), says);
    for (auto it = text.begin() + 2; it != text.end(); ++it) {
      const bool reloaded_line = it->find("(reloaded, not quantized again)") != std::string::npos;
      EXPECT_EQ(reloaded_line, it < at && it->rfind("block ", 0) == 0) << id << ": " << *it;
      if (it > at) break;
    }
  }
}

// Every event is numbered in the store before watchers get it; a watch that resumes after a
// restart gets the events after its position, the same ones a live watcher got.
TEST(JobSchedulerTest, EventsAreNumberedAndReplayedAfterARestart) {
  const std::string path = FreshPath("events");
  std::string id;
  std::vector<v1::JobEvent> live;
  int64_t snapshot_sequence = -1;
  {
    auto store = SqliteJobStore::Open(path);
    ASSERT_TRUE(store.ok());
    FakeExecutor executor;
    metrics::Registry registry;
    JobScheduler scheduler(**store, executor, registry);
    ASSERT_TRUE(scheduler.Start().ok());
    auto job = scheduler.Submit(Spec("reload-1-of-3"));
    ASSERT_TRUE(job.ok());
    id = job->id();
    auto watch = scheduler.StartWatch(id);
    ASSERT_TRUE(watch.ok());
    EXPECT_TRUE(watch->missed.empty());
    snapshot_sequence = watch->last_sequence;
    while (true) {
      auto event = watch->events->Next(5s);
      ASSERT_TRUE(event.has_value());
      live.push_back(*event);
      if (event->has_state() && IsFinished(event->state().state())) break;
    }
  }
  // Contiguous after the snapshot's position.
  for (size_t i = 0; i < live.size(); ++i) {
    EXPECT_EQ(live[i].sequence(), snapshot_sequence + 1 + static_cast<int64_t>(i));
  }
  // QUEUED, RUNNING, layer and block 1 reloaded, layer and block 2, layer and block 3, SUCCEEDED.
  EXPECT_EQ(snapshot_sequence + static_cast<int64_t>(live.size()), 9);

  auto store = SqliteJobStore::Open(path);
  ASSERT_TRUE(store.ok());
  FakeExecutor executor;
  metrics::Registry registry;
  JobScheduler scheduler(**store, executor, registry);
  ASSERT_TRUE(scheduler.Start().ok());
  auto resumed = scheduler.StartWatch(id, snapshot_sequence);
  ASSERT_TRUE(resumed.ok());
  EXPECT_EQ(resumed->last_sequence, 9);
  ASSERT_EQ(resumed->missed.size(), live.size());
  for (size_t i = 0; i < live.size(); ++i) {
    EXPECT_EQ(resumed->missed[i].SerializeAsString(), live[i].SerializeAsString()) << i;
  }
  auto all = scheduler.StartWatch(id, 0);
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->missed.size(), 9u);
  EXPECT_EQ(all->missed[0].state().state(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(all->missed[1].state().state(), v1::JOB_STATE_RUNNING);
  EXPECT_TRUE(all->missed[2].layer().reloaded());
  EXPECT_TRUE(all->missed[3].block().reloaded());
  EXPECT_FALSE(all->missed[4].layer().reloaded());
  EXPECT_FALSE(all->missed[5].block().reloaded());
  EXPECT_EQ(all->missed.back().state().state(), v1::JOB_STATE_SUCCEEDED);
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
