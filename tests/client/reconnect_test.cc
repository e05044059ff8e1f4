// The client's reconnect policy with a fake clock: which failures are retried, the backoff, the
// bound, the lines it prints, and that an answer starts the count again.
#include "client/reconnect.h"

#include <gtest/gtest.h>

#include <vector>

namespace ptq::client {
namespace {
using namespace std::chrono_literals;
using std::chrono::milliseconds;

class ReconnectTest : public ::testing::Test {
 protected:
  ReconnectTest() {
    policy_.give_up_after = 30s;
    policy_.now = [this] { return now_; };
    policy_.sleep = [this](milliseconds d) {
      slept_.push_back(d);
      now_ += d;
    };
    policy_.notify = [this](const std::string& line) { lines_.push_back(line); };
  }

  ReconnectPolicy policy_;
  std::chrono::steady_clock::time_point now_{};
  std::vector<milliseconds> slept_;
  std::vector<std::string> lines_;
};

TEST_F(ReconnectTest, OnlyUnreachableAndTimedOutAreRetried) {
  Reconnector r(policy_);
  for (const absl::Status& s : {absl::NotFoundError("no job job-x"),
                                absl::PermissionDeniedError("bad token"),
                                absl::InvalidArgumentError("job_id is required")}) {
    EXPECT_EQ(r.BeforeRetry(s), s);
  }
  EXPECT_TRUE(slept_.empty());
  EXPECT_TRUE(lines_.empty());
  EXPECT_TRUE(r.BeforeRetry(absl::UnavailableError("coordinator a:1: Socket closed")).ok());
  EXPECT_TRUE(r.BeforeRetry(absl::DeadlineExceededError("coordinator a:1: Deadline Exceeded")).ok());
  EXPECT_EQ(slept_.size(), 2u);
}

TEST_F(ReconnectTest, ZeroMeansFailAtOnce) {
  policy_.give_up_after = 0s;
  Reconnector r(policy_);
  const absl::Status down = absl::UnavailableError("coordinator a:1: failed to connect");
  EXPECT_EQ(r.BeforeRetry(down), down);
  EXPECT_TRUE(slept_.empty());
}

TEST_F(ReconnectTest, BackoffDoublesUpToTheCapAndGivesUpAfterTheBound) {
  Reconnector r(policy_);
  const absl::Status down = absl::UnavailableError("coordinator a:1: failed to connect");
  int retries = 0;
  absl::Status last;
  while ((last = r.BeforeRetry(down)).ok()) {
    ASSERT_LT(++retries, 100);
  }
  // 0.5 + 1 + 2 + 4 + 8 + 10 = 25.5 s, then the 4.5 s left (and a millisecond to cross the bound).
  EXPECT_EQ(slept_, (std::vector<milliseconds>{500ms, 1000ms, 2000ms, 4000ms, 8000ms, 10000ms,
                                               4501ms}));
  EXPECT_EQ(last.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(last.message(), "coordinator a:1: failed to connect (unreachable for 30 s; gave up)");
  ASSERT_EQ(lines_.size(), slept_.size());
  EXPECT_EQ(lines_[0], "ptq: coordinator a:1: failed to connect; retrying in 0.5 s (giving up in 30 s)");
  EXPECT_EQ(lines_[6], "ptq: coordinator a:1: failed to connect; retrying in 4.5 s (giving up in 5 s)");
}

TEST_F(ReconnectTest, AnAnswerSaysSoAndStartsTheCountAgain) {
  Reconnector r(policy_);
  const absl::Status down = absl::UnavailableError("coordinator a:1: Socket closed");
  r.Answered();  // no outage: nothing to say
  EXPECT_TRUE(lines_.empty());
  ASSERT_TRUE(r.BeforeRetry(down).ok());
  ASSERT_TRUE(r.BeforeRetry(down).ok());
  now_ += 250ms;  // the call that got through took a while
  r.Answered("; resuming after event 7");
  ASSERT_EQ(lines_.size(), 3u);
  EXPECT_EQ(lines_[2], "ptq: the coordinator answers again (after 1.8 s, 2 retries); resuming after event 7");
  r.Answered();  // once only
  EXPECT_EQ(lines_.size(), 3u);
  // A later outage has its own 30 s, starting from the first delay again.
  now_ += 1h;
  slept_.clear();
  int retries = 0;
  while (r.BeforeRetry(down).ok()) ++retries;
  EXPECT_EQ(slept_.front(), 500ms);
  EXPECT_EQ(retries, 7);
}

}  // namespace
}  // namespace ptq::client
