// Fans a job's events out to its watchers. Each watcher has its own bounded queue, so a slow Watch
// stream never holds up the job or the other watchers: when a queue is full the oldest progress
// event in it is dropped. State changes are never dropped (a job has at most four of them), so a
// watcher always sees the final state.
//
// Thread safety: everything may be called from any thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "ptq/v1/job.pb.h"

namespace ptq::server {

class JobEventHub;

// One watcher's queue. Unsubscribes itself from the hub when destroyed.
class Subscription {
 public:
  ~Subscription();
  Subscription(const Subscription&) = delete;
  Subscription& operator=(const Subscription&) = delete;

  // The next event, waiting up to `timeout`; nullopt on timeout or once closed and drained.
  std::optional<v1::JobEvent> Next(std::chrono::milliseconds timeout);
  // True once the hub was closed (shutdown) and every queued event has been taken.
  bool Finished();
  // Progress events dropped because the queue was full.
  int64_t dropped();

 private:
  friend class JobEventHub;
  Subscription(JobEventHub* hub, std::string job_id, size_t capacity)
      : hub_(hub), job_id_(std::move(job_id)), capacity_(capacity) {}
  void Push(const v1::JobEvent& event);
  void Close();

  JobEventHub* const hub_;
  const std::string job_id_;
  const size_t capacity_;
  std::mutex mu_;
  std::condition_variable ready_;
  std::deque<v1::JobEvent> events_;
  bool closed_ = false;
  int64_t dropped_ = 0;
};

class JobEventHub {
 public:
  // `capacity`: events a watcher's queue holds before progress events are dropped.
  explicit JobEventHub(size_t capacity = 1024) : capacity_(capacity) {}
  // REQUIRES: every Subscription is destroyed before the hub.
  ~JobEventHub() = default;
  JobEventHub(const JobEventHub&) = delete;
  JobEventHub& operator=(const JobEventHub&) = delete;

  // A new watcher of job `job_id`'s events (closed at once if the hub is closed).
  std::unique_ptr<Subscription> Subscribe(const std::string& job_id);
  // Queues `event` for every watcher of event.job_id().
  void Publish(const v1::JobEvent& event);
  // Closes every queue, now and later: watchers drain what they hold and finish.
  void Close();

 private:
  friend class Subscription;
  void Unsubscribe(Subscription* subscription);

  const size_t capacity_;
  std::mutex mu_;
  bool closed_ = false;
  std::multimap<std::string, Subscription*> watchers_;
};

}  // namespace ptq::server
