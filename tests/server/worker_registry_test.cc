// WorkerRegistry: registration and version checks, leases, assignments, outcomes and the rendezvous
// store, driven directly (the gRPC layer is a translation; remote_workers_test runs the processes).
#include "server/worker_registry.h"

#include <gtest/gtest.h>

#include <thread>

namespace ptq::server {
namespace {

using std::chrono::milliseconds;

class WorkerRegistryTest : public ::testing::Test {
 protected:
  WorkerRegistryTest() : registry_(Options(), metrics_) {}
  static WorkerRegistryOptions Options() {
    WorkerRegistryOptions o;
    o.lease = milliseconds(300);
    o.version = "1.0";
    o.max_store_value_bytes = 16;
    return o;
  }
  std::string Register(const std::string& address) {
    v1::RegisterWorkerRequest r;
    r.set_address(address);
    r.set_version("1.0");
    auto response = registry_.Register(r);
    EXPECT_TRUE(response.ok()) << response.status();
    return response.ok() ? response->worker_id() : "";
  }
  v1::ReportResultRequest Result(const std::string& id, int64_t attempt, absl::StatusCode code) {
    v1::ReportResultRequest r;
    r.set_worker_id(id);
    r.set_attempt(attempt);
    r.set_code(static_cast<int>(code));
    r.set_message("boom");
    return r;
  }

  metrics::Registry metrics_;
  WorkerRegistry registry_;
};

TEST_F(WorkerRegistryTest, RefusesAnotherVersionWithTheReason) {
  v1::RegisterWorkerRequest r;
  r.set_address("10.0.0.1");
  r.set_version("0.9");
  auto response = registry_.Register(r);
  ASSERT_EQ(response.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(response.status().message().find("0.9"), std::string::npos);
  EXPECT_NE(response.status().message().find("1.0"), std::string::npos);
}

TEST_F(WorkerRegistryTest, AssignsRanksInRegistrationOrderAndCompletes) {
  const std::string a = Register("a"), b = Register("b");
  EXPECT_NE(a, b);
  auto members = registry_.WaitForIdleWorkers(2, 2, milliseconds(10));
  ASSERT_EQ(members, (std::vector<std::string>{a, b}));
  v1::JobSpec spec;
  spec.set_output_path("/out");
  const int64_t attempt = registry_.StartAttempt("job-1", spec, "fp", members);
  // Busy workers are not idle.
  EXPECT_TRUE(registry_.WaitForIdleWorkers(1, 1, milliseconds(10)).empty());
  ASSERT_EQ(registry_.WaitAssignment(a, milliseconds(10))->assignment().rank(), 0);
  auto got_b = registry_.WaitAssignment(b, milliseconds(10));
  ASSERT_TRUE(got_b.ok());
  EXPECT_EQ(got_b->assignment().rank(), 1);
  EXPECT_EQ(got_b->assignment().size(), 2);
  EXPECT_EQ(got_b->assignment().spec().output_path(), "/out");
  EXPECT_EQ(got_b->assignment().model_fingerprint(), "fp");
  // Only rank 0 reports progress.
  v1::ReportProgressRequest p;
  p.set_worker_id(b);
  p.set_attempt(attempt);
  EXPECT_EQ(registry_.ReportProgress(p).status().code(), absl::StatusCode::kPermissionDenied);
  p.set_worker_id(a);
  p.mutable_block()->set_block(0);
  ASSERT_TRUE(registry_.ReportProgress(p).ok());
  // Rank 0 of the current attempt may commit; the question is not a progress event.
  v1::ReportProgressRequest commit;
  commit.set_worker_id(a);
  commit.set_attempt(attempt);
  commit.set_ready_to_commit(true);
  auto may_commit = registry_.ReportProgress(commit);
  ASSERT_TRUE(may_commit.ok());
  EXPECT_FALSE(may_commit->abort());
  commit.set_attempt(attempt + 1);  // an attempt this coordinator does not run
  EXPECT_TRUE(registry_.ReportProgress(commit)->abort());
  commit.set_worker_id("a worker this coordinator does not know");  // it restarted
  EXPECT_EQ(registry_.ReportProgress(commit).status().code(), absl::StatusCode::kNotFound);

  ASSERT_TRUE(registry_.ReportResult(Result(b, attempt, absl::StatusCode::kOk)).ok());
  auto rank0 = Result(a, attempt, absl::StatusCode::kOk);
  rank0.mutable_result()->set_checkpoint_path("/out");
  ASSERT_TRUE(registry_.ReportResult(rank0).ok());
  AttemptUpdate u = registry_.PollAttempt(attempt, milliseconds(10));
  EXPECT_EQ(u.progress.size(), 1u);
  EXPECT_EQ(u.outcomes, 2);
  ASSERT_TRUE(u.result.has_value());
  EXPECT_EQ(u.result->checkpoint_path(), "/out");
  EXPECT_FALSE(u.failure.has_value());
  registry_.FinishAttempt(attempt);
  EXPECT_EQ(registry_.WaitForIdleWorkers(2, 2, milliseconds(10)).size(), 2u);
}

TEST_F(WorkerRegistryTest, AnExpiredLeaseLosesTheRankAndTheWorker) {
  const std::string a = Register("a"), b = Register("b");
  const int64_t attempt = registry_.StartAttempt("job-1", {}, "fp", {a, b});
  ASSERT_TRUE(registry_.WaitAssignment(a, milliseconds(10))->has_assignment());
  // Only a keeps heartbeating.
  for (int i = 0; i < 8; ++i) {
    ASSERT_TRUE(registry_.Heartbeat(a).ok());
    std::this_thread::sleep_for(milliseconds(100));
  }
  AttemptUpdate u = registry_.PollAttempt(attempt, milliseconds(10));
  ASSERT_TRUE(u.failure.has_value());
  EXPECT_EQ(u.failure->code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(u.failure->message().find(b), std::string::npos);
  EXPECT_TRUE(u.transient);
  EXPECT_EQ(u.outcomes, 1);
  EXPECT_EQ(registry_.Heartbeat(b).status().code(), absl::StatusCode::kNotFound);
  // The survivor is told to stop, and stays busy until it says it did.
  registry_.AbortAttempt(attempt);
  auto hb = registry_.Heartbeat(a);
  ASSERT_TRUE(hb.ok());
  ASSERT_EQ(hb->abort_attempts_size(), 1);
  EXPECT_EQ(hb->abort_attempts(0), attempt);
  EXPECT_TRUE(registry_.WaitForIdleWorkers(1, 1, milliseconds(10)).empty());
  ASSERT_TRUE(registry_.ReportResult(Result(a, attempt, absl::StatusCode::kCancelled)).ok());
  EXPECT_EQ(registry_.PollAttempt(attempt, milliseconds(10)).outcomes, 2);
  EXPECT_EQ(registry_.WaitForIdleWorkers(2, 1, milliseconds(10)), std::vector<std::string>{a});
}

TEST_F(WorkerRegistryTest, ARankErrorIsTransientOnlyWhenAnotherGroupCanCureIt) {
  const std::string a = Register("a");
  int64_t attempt = registry_.StartAttempt("job", {}, "fp", {a});
  ASSERT_TRUE(registry_.ReportResult(Result(a, attempt, absl::StatusCode::kInvalidArgument)).ok());
  AttemptUpdate u = registry_.PollAttempt(attempt, milliseconds(10));
  ASSERT_TRUE(u.failure.has_value());
  EXPECT_FALSE(u.transient);
  registry_.FinishAttempt(attempt);

  attempt = registry_.StartAttempt("job", {}, "fp", {a});
  auto refuse = Result(a, attempt, absl::StatusCode::kFailedPrecondition);
  refuse.set_worker_refuses(true);
  ASSERT_TRUE(registry_.ReportResult(refuse).ok());
  u = registry_.PollAttempt(attempt, milliseconds(10));
  EXPECT_TRUE(u.transient);
  // A refusing worker is dropped and told why.
  auto hb = registry_.Heartbeat(a);
  EXPECT_EQ(hb.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(hb.status().message().find("boom"), std::string::npos);
}

TEST_F(WorkerRegistryTest, StoreIsScopedToTheAttemptAndWaits) {
  const std::string a = Register("a"), b = Register("b"), c = Register("c");
  const int64_t attempt = registry_.StartAttempt("job", {}, "fp", {a, b});
  const std::string prefix = registry_.WaitAssignment(a, milliseconds(10))->assignment().store_prefix();
  ASSERT_FALSE(prefix.empty());
  EXPECT_EQ(registry_.StoreSet(a, "elsewhere/k", "v").code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(registry_.StoreSet(c, prefix + "k", "v").code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(registry_.StoreSet(a, prefix + "big", std::string(17, 'x')).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(registry_.StoreGet(b, {prefix + "k"}, milliseconds(20)).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  std::thread setter([&] {
    std::this_thread::sleep_for(milliseconds(50));
    ASSERT_TRUE(registry_.StoreSet(a, prefix + "k", "value").ok());
  });
  auto got = registry_.StoreGet(b, {prefix + "k"}, milliseconds(2000));
  setter.join();
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->at(0), "value");
  registry_.AbortAttempt(attempt);
  EXPECT_EQ(registry_.StoreGet(b, {prefix + "k"}, milliseconds(20)).status().code(),
            absl::StatusCode::kAborted);
}

}  // namespace
}  // namespace ptq::server
