// A watcher's queue is bounded by dropping progress, never state changes.
#include "server/job_event_hub.h"

#include <gtest/gtest.h>

namespace ptq::server {
namespace {

using std::chrono::milliseconds;

v1::JobEvent Layer(const std::string& id, int64_t done) {
  v1::JobEvent e;
  e.set_job_id(id);
  e.mutable_layer()->set_layers_done(done);
  return e;
}

v1::JobEvent State(const std::string& id, v1::JobState state) {
  v1::JobEvent e;
  e.set_job_id(id);
  e.mutable_state()->set_state(state);
  return e;
}

TEST(JobEventHubTest, EventsReachOnlyTheirJobsWatchersInOrder) {
  JobEventHub hub;
  auto a1 = hub.Subscribe("a");
  auto a2 = hub.Subscribe("a");
  auto b = hub.Subscribe("b");
  hub.Publish(Layer("a", 1));
  hub.Publish(Layer("a", 2));
  for (auto* s : {a1.get(), a2.get()}) {
    EXPECT_EQ(s->Next(milliseconds(10))->layer().layers_done(), 1);
    EXPECT_EQ(s->Next(milliseconds(10))->layer().layers_done(), 2);
    EXPECT_FALSE(s->Next(milliseconds(1)).has_value());
  }
  EXPECT_FALSE(b->Next(milliseconds(1)).has_value());
}

TEST(JobEventHubTest, FullQueueDropsOldestProgressButKeepsStateChanges) {
  JobEventHub hub(/*capacity=*/3);
  auto s = hub.Subscribe("a");
  hub.Publish(State("a", v1::JOB_STATE_RUNNING));
  for (int i = 1; i <= 10; ++i) hub.Publish(Layer("a", i));
  hub.Publish(State("a", v1::JOB_STATE_SUCCEEDED));
  std::vector<v1::JobEvent> got;
  while (auto e = s->Next(milliseconds(1))) got.push_back(*e);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].state().state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(got[1].layer().layers_done(), 10);  // the newest progress survives
  EXPECT_EQ(got[2].state().state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(s->dropped(), 9);
}

TEST(JobEventHubTest, CloseFinishesWatchersAfterTheyDrain) {
  JobEventHub hub;
  auto s = hub.Subscribe("a");
  hub.Publish(Layer("a", 1));
  hub.Close();
  EXPECT_FALSE(s->Finished());
  EXPECT_TRUE(s->Next(milliseconds(1)).has_value());
  EXPECT_TRUE(s->Finished());
  EXPECT_TRUE(hub.Subscribe("a")->Finished());  // late subscribers finish at once
}

}  // namespace
}  // namespace ptq::server
