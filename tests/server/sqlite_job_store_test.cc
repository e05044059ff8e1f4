// The SQLite job store keeps what it was given, in order, across a reopen.
#include "server/sqlite_job_store.h"

#include <gtest/gtest.h>

#include <filesystem>

namespace ptq::server {
namespace {
namespace fs = std::filesystem;

std::string FreshPath(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("ptq_sqlite_job_store_test_" + name + ".db");
  for (const char* suffix : {"", "-wal", "-shm"}) fs::remove(p.string() + suffix);
  return p.string();
}

v1::Job MakeJob(const std::string& id, v1::JobState state) {
  v1::Job job;
  job.set_id(id);
  job.set_state(state);
  job.mutable_spec()->set_model_path("/models/" + id);
  job.mutable_spec()->set_bits(3);
  job.set_create_time_ms(1000);
  return job;
}

TEST(SqliteJobStoreTest, RoundTripsEveryFieldAcrossAReopen) {
  const std::string path = FreshPath("round_trip");
  v1::Job job = MakeJob("a", v1::JOB_STATE_SUCCEEDED);
  job.set_blocks_done(4);
  job.set_num_blocks(4);
  job.set_layers_done(28);
  job.set_layers_total(28);
  job.set_error("");
  job.mutable_result()->set_checkpoint_path("/out/a");
  job.mutable_result()->set_perplexity_after(12.5);
  job.mutable_result()->add_layers()->set_name("model.layers.0.self_attn.q_proj");
  job.set_start_time_ms(2000);
  job.set_end_time_ms(3000);
  {
    auto store = SqliteJobStore::Open(path);
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE((*store)->Insert(MakeJob("a", v1::JOB_STATE_QUEUED)).ok());
    ASSERT_TRUE((*store)->Update(job).ok());
    v1::LogLine line;
    line.set_time_ms(5);
    line.set_text("first");
    ASSERT_TRUE((*store)->AppendLog("a", line).ok());
    line.set_text("second");
    ASSERT_TRUE((*store)->AppendLog("a", line).ok());
  }
  auto store = SqliteJobStore::Open(path);
  ASSERT_TRUE(store.ok()) << store.status();
  auto got = (*store)->Get("a");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->SerializeAsString(), job.SerializeAsString()) << got->DebugString();
  EXPECT_FALSE(got->result().has_perplexity_before());
  auto logs = (*store)->Logs("a", 1);
  ASSERT_TRUE(logs.ok());
  ASSERT_EQ(logs->size(), 1u);
  EXPECT_EQ((*logs)[0].text(), "second");
}

TEST(SqliteJobStoreTest, ListsInInsertionOrderAndCountsByState) {
  auto store = SqliteJobStore::Open(FreshPath("list"));
  ASSERT_TRUE(store.ok());
  for (const char* id : {"z", "b", "m"}) {
    ASSERT_TRUE((*store)->Insert(MakeJob(id, v1::JOB_STATE_QUEUED)).ok());
  }
  ASSERT_TRUE((*store)->Update(MakeJob("b", v1::JOB_STATE_RUNNING)).ok());
  auto jobs = (*store)->List();
  ASSERT_TRUE(jobs.ok());
  ASSERT_EQ(jobs->size(), 3u);
  EXPECT_EQ((*jobs)[0].id(), "z");
  EXPECT_EQ((*jobs)[1].id(), "b");
  EXPECT_EQ((*jobs)[2].id(), "m");
  auto counts = (*store)->CountByState();
  ASSERT_TRUE(counts.ok());
  EXPECT_EQ((*counts)[v1::JOB_STATE_QUEUED], 2);
  EXPECT_EQ((*counts)[v1::JOB_STATE_RUNNING], 1);
}

TEST(SqliteJobStoreTest, MissingAndDuplicateIdsAreErrors) {
  auto store = SqliteJobStore::Open(FreshPath("errors"));
  ASSERT_TRUE(store.ok());
  EXPECT_EQ((*store)->Get("nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ((*store)->Update(MakeJob("nope", v1::JOB_STATE_QUEUED)).code(),
            absl::StatusCode::kNotFound);
  ASSERT_TRUE((*store)->Insert(MakeJob("a", v1::JOB_STATE_QUEUED)).ok());
  EXPECT_EQ((*store)->Insert(MakeJob("a", v1::JOB_STATE_QUEUED)).code(),
            absl::StatusCode::kAlreadyExists);
}

TEST(SqliteJobStoreTest, EventsAreNumberedPerJobAndKeptAcrossAReopen) {
  const std::string path = FreshPath("events");
  auto event = [](const std::string& job, int64_t layers_done) {
    v1::JobEvent e;
    e.set_job_id(job);
    e.set_time_ms(100 + layers_done);
    e.set_sequence(99);  // ignored: the store numbers
    e.mutable_layer()->set_layers_done(layers_done);
    return e;
  };
  {
    auto store = SqliteJobStore::Open(path);
    ASSERT_TRUE(store.ok()) << store.status();
    EXPECT_EQ(*(*store)->LastEventSequence("a"), 0);
    EXPECT_EQ(*(*store)->AppendEvent(event("a", 1)), 1);
    EXPECT_EQ(*(*store)->AppendEvent(event("b", 1)), 1);
    EXPECT_EQ(*(*store)->AppendEvent(event("a", 2)), 2);
  }
  auto store = SqliteJobStore::Open(path);
  ASSERT_TRUE(store.ok());
  EXPECT_EQ(*(*store)->AppendEvent(event("a", 3)), 3);  // goes on counting after a reopen
  EXPECT_EQ(*(*store)->LastEventSequence("a"), 3);
  auto after_one = (*store)->Events("a", 1);
  ASSERT_TRUE(after_one.ok());
  ASSERT_EQ(after_one->size(), 2u);
  for (int i = 0; i < 2; ++i) {
    v1::JobEvent expected = event("a", i + 2);
    expected.set_sequence(i + 2);
    EXPECT_EQ((*after_one)[i].SerializeAsString(), expected.SerializeAsString()) << i;
  }
  EXPECT_TRUE((*store)->Events("a", 3)->empty());
  EXPECT_EQ((*store)->Events("b", 0)->size(), 1u);
}

TEST(SqliteJobStoreTest, UnopenablePathIsAnError) {
  auto store = SqliteJobStore::Open("/nonexistent/dir/jobs.db");
  ASSERT_FALSE(store.ok());
  EXPECT_NE(std::string(store.status().message()).find("/nonexistent/dir/jobs.db"), std::string::npos);
}

}  // namespace
}  // namespace ptq::server
