// How `ptq watch`, `logs` and `status` ride out a coordinator that cannot be reached for a while (a
// restart, a rescheduled pod, a network blip): they retry with exponential backoff, bounded in
// total time, and say so on stderr, one line per retry and one when they are back.
//
// Thread safety: a Reconnector belongs to one call; a ReconnectPolicy may be shared.
#pragma once

#include <chrono>
#include <functional>
#include <string>

#include "absl/status/status.h"

namespace ptq::client {

struct ReconnectPolicy {
  // Retry while the coordinator has been unreachable for less than this (counted from the first
  // failure since it last answered); zero: fail at once, as without reconnecting.
  std::chrono::milliseconds give_up_after{std::chrono::minutes(5)};
  std::chrono::milliseconds first_delay{500};  // doubled after each failure, up to max_delay
  std::chrono::milliseconds max_delay{10000};
  // Where the retry and reconnect lines go (nullptr: nowhere).
  std::function<void(const std::string&)> notify;
  // Injectable for tests: the clock and the wait.
  std::function<std::chrono::steady_clock::time_point()> now = [] {
    return std::chrono::steady_clock::now();
  };
  std::function<void(std::chrono::milliseconds)> sleep;  // nullptr: std::this_thread::sleep_for
};

// A failure worth retrying: the coordinator is unreachable, restarting or shutting down
// (UNAVAILABLE), or did not answer in time (DEADLINE_EXCEEDED). Anything else is its answer.
bool IsTransient(const absl::Status& status);

class Reconnector {
 public:
  explicit Reconnector(const ReconnectPolicy& policy) : policy_(policy) {}

  // After a failed call: for a transient `status` with time left, says so, waits the next delay
  // and returns OK (call again); otherwise returns the error to report: `status` itself, or, once
  // the time is up, one line saying how long the coordinator was unreachable.
  absl::Status BeforeRetry(const absl::Status& status);
  // The coordinator answered: resets the backoff; after an outage, says it is back (`detail` is
  // appended to that line, e.g. where a stream resumes).
  void Answered(const std::string& detail = "");

 private:
  const ReconnectPolicy& policy_;
  bool failing_ = false;
  std::chrono::steady_clock::time_point first_failure_;
  std::chrono::milliseconds next_delay_{0};
  int retries_ = 0;
};

}  // namespace ptq::client
