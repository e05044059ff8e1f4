#include "server/job_event_hub.h"

#include <algorithm>

namespace ptq::server {

Subscription::~Subscription() { hub_->Unsubscribe(this); }

void Subscription::Push(const v1::JobEvent& event) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return;
    if (events_.size() >= capacity_) {
      auto oldest_progress = std::find_if(events_.begin(), events_.end(), [](const v1::JobEvent& e) {
        return e.kind_case() != v1::JobEvent::kState;
      });
      if (oldest_progress != events_.end()) {
        events_.erase(oldest_progress);
        ++dropped_;
      } else if (event.kind_case() != v1::JobEvent::kState) {
        ++dropped_;  // full of state changes: drop the new progress event instead
        return;
      }
    }
    events_.push_back(event);
  }
  ready_.notify_one();
}

void Subscription::Close() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
  }
  ready_.notify_all();
}

std::optional<v1::JobEvent> Subscription::Next(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  ready_.wait_for(lock, timeout, [this] { return !events_.empty() || closed_; });
  if (events_.empty()) return std::nullopt;
  v1::JobEvent event = std::move(events_.front());
  events_.pop_front();
  return event;
}

bool Subscription::Finished() {
  std::lock_guard<std::mutex> lock(mu_);
  return closed_ && events_.empty();
}

int64_t Subscription::dropped() {
  std::lock_guard<std::mutex> lock(mu_);
  return dropped_;
}

std::unique_ptr<Subscription> JobEventHub::Subscribe(const std::string& job_id) {
  std::unique_ptr<Subscription> s(new Subscription(this, job_id, capacity_));
  std::lock_guard<std::mutex> lock(mu_);
  if (closed_) {
    s->Close();
  } else {
    watchers_.emplace(job_id, s.get());
  }
  return s;
}

void JobEventHub::Publish(const v1::JobEvent& event) {
  std::lock_guard<std::mutex> lock(mu_);
  auto [begin, end] = watchers_.equal_range(event.job_id());
  for (auto it = begin; it != end; ++it) it->second->Push(event);
}

void JobEventHub::Close() {
  std::lock_guard<std::mutex> lock(mu_);
  closed_ = true;
  for (auto& [id, s] : watchers_) s->Close();
}

void JobEventHub::Unsubscribe(Subscription* subscription) {
  std::lock_guard<std::mutex> lock(mu_);
  auto [begin, end] = watchers_.equal_range(subscription->job_id_);
  for (auto it = begin; it != end; ++it) {
    if (it->second == subscription) {
      watchers_.erase(it);
      return;
    }
  }
}

}  // namespace ptq::server
