#include "client/reconnect.h"

#include <algorithm>
#include <cmath>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace ptq::client {
namespace {

double Seconds(std::chrono::nanoseconds d) { return std::chrono::duration<double>(d).count(); }

}  // namespace

bool IsTransient(const absl::Status& status) {
  return status.code() == absl::StatusCode::kUnavailable ||
         status.code() == absl::StatusCode::kDeadlineExceeded;
}

absl::Status Reconnector::BeforeRetry(const absl::Status& status) {
  if (!IsTransient(status) || policy_.give_up_after.count() <= 0) return status;
  const auto now = policy_.now();
  if (!failing_) {
    failing_ = true;
    first_failure_ = now;
    next_delay_ = policy_.first_delay;
  }
  const auto left = first_failure_ + policy_.give_up_after - now;
  if (left <= std::chrono::nanoseconds::zero()) {
    return absl::Status(status.code(),
                        absl::StrFormat("%s (unreachable for %.0f s; gave up)", status.message(),
                                        Seconds(now - first_failure_)));
  }
  const auto delay = std::min<std::chrono::milliseconds>(
      next_delay_, std::chrono::duration_cast<std::chrono::milliseconds>(left) +
                       std::chrono::milliseconds(1));
  if (policy_.notify) {
    policy_.notify(absl::StrFormat("ptq: %s; retrying in %.1f s (giving up in %.0f s)",
                                   status.message(), Seconds(delay), std::ceil(Seconds(left))));
  }
  if (policy_.sleep) {
    policy_.sleep(delay);
  } else {
    std::this_thread::sleep_for(delay);
  }
  next_delay_ = std::min(next_delay_ * 2, policy_.max_delay);
  ++retries_;
  return absl::OkStatus();
}

void Reconnector::Answered(const std::string& detail) {
  if (!failing_) return;
  failing_ = false;
  if (policy_.notify) {
    policy_.notify(absl::StrFormat("ptq: the coordinator answers again (after %.1f s, %d %s)%s",
                                   Seconds(policy_.now() - first_failure_), retries_,
                                   retries_ == 1 ? "retry" : "retries", detail));
  }
  retries_ = 0;
}

}  // namespace ptq::client
