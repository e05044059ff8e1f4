#include "server/worker_registry.h"

#include <spdlog/spdlog.h>

#include <random>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "common/metric_names.h"

namespace ptq::server {
namespace {

using Clock = std::chrono::steady_clock;

std::string RandomEpoch() {
  std::random_device device;
  return absl::StrFormat("%04x", device() & 0xffff);
}

absl::Duration ToAbsl(std::chrono::nanoseconds d) { return absl::FromChrono(d); }

}  // namespace

WorkerRegistry::WorkerRegistry(WorkerRegistryOptions options, metrics::Registry& metrics)
    : options_(std::move(options)),
      metrics_(metrics),
      epoch_(RandomEpoch()),
      // Attempt ids from the clock: a worker still holding an id from the previous coordinator
      // process cannot collide with a new one.
      next_attempt_(std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::system_clock::now().time_since_epoch())
                        .count() *
                    1000) {
  UpdateGauge();
}

absl::StatusOr<v1::RegisterWorkerResponse> WorkerRegistry::Register(
    const v1::RegisterWorkerRequest& request) {
  if (request.version() != options_.version) {
    return absl::FailedPreconditionError(absl::StrCat(
        "worker version ", request.version().empty() ? "(none)" : request.version(),
        " does not match the coordinator's ", options_.version,
        ": run coordinator and workers of the same build"));
  }
  if (request.address().empty() || request.address().size() > 255) {
    return absl::InvalidArgumentError("address (the host peers reach the worker at) is required");
  }
  absl::MutexLock lock(&mu_);
  const std::string id = absl::StrCat("worker-", epoch_, "-", next_worker_);
  Worker& w = workers_[id];
  w.address = request.address();
  w.device = request.device().empty() ? "cpu" : request.device();
  w.order = next_worker_++;
  w.deadline = Clock::now() + options_.lease;
  spdlog::info("{} registered: {} ({}, {} cores)", id, w.address, w.device,
               request.resources().cpu_cores());
  UpdateGauge();
  changed_.SignalAll();
  v1::RegisterWorkerResponse response;
  response.set_worker_id(id);
  response.set_lease_ms(options_.lease.count());
  return response;
}

absl::StatusOr<WorkerRegistry::Worker*> WorkerRegistry::Touch(const std::string& worker_id) {
  ExpireLeases();
  if (auto r = refused_.find(worker_id); r != refused_.end()) {
    return absl::FailedPreconditionError(r->second);
  }
  auto it = workers_.find(worker_id);
  if (it == workers_.end()) {
    return absl::NotFoundError(absl::StrCat("unknown worker ", worker_id, " (register again)"));
  }
  it->second.deadline = Clock::now() + options_.lease;
  return &it->second;
}

void WorkerRegistry::ExpireLeases() {
  const auto now = Clock::now();
  for (auto it = workers_.begin(); it != workers_.end();) {
    if (it->second.deadline > now) {
      ++it;
      continue;
    }
    const std::string& id = it->first;
    spdlog::warn("{} ({}) lost: no heartbeat within its {} ms lease", id, it->second.address,
                 options_.lease.count());
    metrics::CounterFor(metrics_, metrics::names::kWorkerLeaseExpiries).Increment();
    if (auto a = attempts_.find(it->second.busy_attempt); a != attempts_.end()) {
      for (size_t r = 0; r < a->second.members.size(); ++r) {
        if (a->second.members[r] == id) {
          RecordOutcome(a->second, static_cast<int>(r),
                        absl::UnavailableError(absl::StrCat(
                            id, " (", it->second.address, ", rank ", r, ") was lost: no heartbeat for ",
                            options_.lease.count(), " ms")),
                        /*transient=*/true);
        }
      }
    }
    it = workers_.erase(it);
    changed_.SignalAll();
  }
  UpdateGauge();
}

void WorkerRegistry::RecordOutcome(Attempt& attempt, int rank, const absl::Status& status,
                                   bool transient) {
  if (attempt.reported[rank]) return;
  attempt.reported[rank] = true;
  ++attempt.outcomes;
  if (!status.ok() && !attempt.failure.has_value()) {
    attempt.failure = status;
    attempt.transient = transient;
  }
  changed_.SignalAll();
}

void WorkerRegistry::UpdateGauge() {
  metrics::GaugeFor(metrics_, metrics::names::kWorkersConnected)
      .Set(static_cast<double>(workers_.size()));
}

absl::StatusOr<v1::HeartbeatResponse> WorkerRegistry::Heartbeat(const std::string& worker_id) {
  absl::MutexLock lock(&mu_);
  auto w = Touch(worker_id);
  if (!w.ok()) return w.status();
  metrics::CounterFor(metrics_, metrics::names::kWorkerHeartbeats, {{"worker", worker_id}})
      .Increment();
  v1::HeartbeatResponse response;
  response.set_lease_ms(options_.lease.count());
  const int64_t busy = (*w)->busy_attempt;
  if (busy != 0) {
    auto a = attempts_.find(busy);
    if (a == attempts_.end() || a->second.aborted) response.add_abort_attempts(busy);
  }
  return response;
}

absl::StatusOr<v1::GetAssignmentResponse> WorkerRegistry::WaitAssignment(
    const std::string& worker_id, std::chrono::milliseconds wait) {
  absl::MutexLock lock(&mu_);
  const auto deadline = Clock::now() + wait;
  v1::GetAssignmentResponse response;
  while (true) {
    auto w = Touch(worker_id);
    if (!w.ok()) return w.status();
    if ((*w)->pending.has_value()) {
      *response.mutable_assignment() = *std::move((*w)->pending);
      (*w)->pending.reset();
      return response;
    }
    const auto now = Clock::now();
    if (now >= deadline) return response;
    changed_.WaitWithTimeout(&mu_, ToAbsl(std::min<Clock::duration>(deadline - now, options_.lease / 2)));
  }
}

absl::StatusOr<v1::ReportProgressResponse> WorkerRegistry::ReportProgress(
    const v1::ReportProgressRequest& report) {
  absl::MutexLock lock(&mu_);
  auto w = Touch(report.worker_id());
  if (!w.ok()) return w.status();
  v1::ReportProgressResponse response;
  auto a = attempts_.find(report.attempt());
  if (a == attempts_.end() || a->second.aborted) {
    response.set_abort(true);
    return response;
  }
  if (a->second.members.empty() || a->second.members[0] != report.worker_id()) {
    return absl::PermissionDeniedError("only rank 0 of an attempt reports progress");
  }
  if (report.has_ready_to_commit()) return response;  // current: commit; no event to show
  a->second.progress.push_back(report);
  changed_.SignalAll();
  return response;
}

absl::Status WorkerRegistry::ReportResult(const v1::ReportResultRequest& report) {
  absl::MutexLock lock(&mu_);
  auto w = Touch(report.worker_id());
  if (!w.ok()) return w.status();
  if ((*w)->busy_attempt == report.attempt()) (*w)->busy_attempt = 0;
  auto a = attempts_.find(report.attempt());
  if (a == attempts_.end()) return absl::OkStatus();  // already finished: nothing to record
  Attempt& attempt = a->second;
  int rank = -1;
  for (size_t r = 0; r < attempt.members.size(); ++r) {
    if (attempt.members[r] == report.worker_id()) rank = static_cast<int>(r);
  }
  if (rank < 0) return absl::PermissionDeniedError("the worker is not a member of this attempt");
  const auto code = static_cast<absl::StatusCode>(report.code());
  absl::Status status = code == absl::StatusCode::kOk
                            ? absl::OkStatus()
                            : absl::Status(code, absl::StrCat(report.worker_id(), " (", (*w)->address,
                                                              ", rank ", rank, "): ", report.message()));
  bool transient = code == absl::StatusCode::kUnavailable || code == absl::StatusCode::kAborted ||
                   code == absl::StatusCode::kDeadlineExceeded;
  if (report.worker_refuses()) {
    // The worker cannot take this job (it sees another model): drop it for good, so the next group
    // is formed without it; its next call is told why.
    transient = true;
    refused_[report.worker_id()] = absl::StrCat("refused: ", report.message());
    spdlog::warn("{} refused: {}", report.worker_id(), report.message());
    workers_.erase(report.worker_id());
    UpdateGauge();
  }
  if (rank == 0 && status.ok() && report.has_result()) attempt.result = report.result();
  RecordOutcome(attempt, rank, status, transient);
  return absl::OkStatus();
}

absl::Status WorkerRegistry::StoreSet(const std::string& worker_id, const std::string& key,
                                      std::string value) {
  absl::MutexLock lock(&mu_);
  auto w = Touch(worker_id);
  if (!w.ok()) return w.status();
  auto a = attempts_.find((*w)->busy_attempt);
  if (a == attempts_.end() || !absl::StartsWith(key, a->second.store_prefix)) {
    return absl::PermissionDeniedError("store keys must lie under the caller's attempt prefix");
  }
  if (value.size() > options_.max_store_value_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("store value of ", value.size(), " bytes (limit ",
                                                     options_.max_store_value_bytes, ")"));
  }
  if (!store_.count(key) && ++a->second.store_keys > options_.max_store_keys) {
    return absl::ResourceExhaustedError("too many store keys for one attempt");
  }
  store_[key] = std::move(value);
  changed_.SignalAll();
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> WorkerRegistry::StoreGet(
    const std::string& worker_id, const std::vector<std::string>& keys, std::chrono::milliseconds wait) {
  absl::MutexLock lock(&mu_);
  const auto deadline = Clock::now() + wait;
  while (true) {
    auto w = Touch(worker_id);
    if (!w.ok()) return w.status();
    auto a = attempts_.find((*w)->busy_attempt);
    if (a == attempts_.end() || a->second.aborted) {
      return absl::AbortedError("the attempt was aborted");
    }
    std::vector<std::string> values;
    for (const std::string& key : keys) {
      auto it = store_.find(key);
      if (it == store_.end()) break;
      values.push_back(it->second);
    }
    if (values.size() == keys.size()) return values;
    const auto now = Clock::now();
    if (now >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat("store keys not set within ", wait.count(), " ms"));
    }
    changed_.WaitWithTimeout(&mu_, ToAbsl(std::min<Clock::duration>(deadline - now, options_.lease / 2)));
  }
}

std::vector<std::string> WorkerRegistry::WaitForIdleWorkers(int want, int at_least,
                                                           std::chrono::milliseconds wait) {
  absl::MutexLock lock(&mu_);
  const auto deadline = Clock::now() + wait;
  while (true) {
    ExpireLeases();
    std::vector<std::pair<int64_t, std::string>> idle;
    for (const auto& [id, w] : workers_) {
      if (w.busy_attempt == 0 && !w.pending.has_value()) idle.emplace_back(w.order, id);
    }
    std::sort(idle.begin(), idle.end());
    const auto now = Clock::now();
    if (static_cast<int>(idle.size()) >= want || now >= deadline) {
      if (static_cast<int>(idle.size()) < std::max(at_least, 1)) return {};
      std::vector<std::string> chosen;
      for (size_t i = 0; i < idle.size() && static_cast<int>(chosen.size()) < want; ++i) {
        chosen.push_back(idle[i].second);
      }
      return chosen;
    }
    changed_.WaitWithTimeout(&mu_, ToAbsl(std::min<Clock::duration>(deadline - now, options_.lease / 2)));
  }
}

int64_t WorkerRegistry::StartAttempt(const std::string& job_id, const v1::JobSpec& spec,
                                     const std::string& model_fingerprint,
                                     const std::vector<std::string>& members) {
  absl::MutexLock lock(&mu_);
  const int64_t id = next_attempt_++;
  Attempt& attempt = attempts_[id];
  attempt.job_id = job_id;
  attempt.store_prefix = absl::StrCat("attempt/", id, "/");
  attempt.members = members;
  attempt.reported.assign(members.size(), false);
  for (size_t r = 0; r < members.size(); ++r) {
    auto w = workers_.find(members[r]);
    if (w == workers_.end()) {  // lost since it was chosen
      RecordOutcome(attempt, static_cast<int>(r),
                    absl::UnavailableError(absl::StrCat(members[r], " was lost before it started")),
                    /*transient=*/true);
      continue;
    }
    v1::Assignment a;
    a.set_job_id(job_id);
    a.set_attempt(id);
    a.set_rank(static_cast<int32_t>(r));
    a.set_size(static_cast<int32_t>(members.size()));
    *a.mutable_spec() = spec;
    a.set_store_prefix(attempt.store_prefix);
    a.set_model_fingerprint(model_fingerprint);
    w->second.pending = std::move(a);
    w->second.busy_attempt = id;
  }
  changed_.SignalAll();
  return id;
}

AttemptUpdate WorkerRegistry::PollAttempt(int64_t attempt_id, std::chrono::milliseconds wait) {
  absl::MutexLock lock(&mu_);
  const auto deadline = Clock::now() + wait;
  AttemptUpdate update;
  while (true) {
    ExpireLeases();
    auto a = attempts_.find(attempt_id);
    if (a == attempts_.end()) {
      update.failure = absl::InternalError("unknown attempt");
      return update;
    }
    Attempt& attempt = a->second;
    const auto now = Clock::now();
    const bool news = !attempt.progress.empty() || attempt.outcomes == static_cast<int>(attempt.members.size()) ||
                      attempt.failure.has_value() || attempt.result.has_value();
    if (news || now >= deadline) {
      update.progress = std::move(attempt.progress);
      attempt.progress.clear();
      update.size = static_cast<int>(attempt.members.size());
      update.outcomes = attempt.outcomes;
      update.failure = attempt.failure;
      update.transient = attempt.transient;
      update.result = attempt.result;
      return update;
    }
    changed_.WaitWithTimeout(&mu_, ToAbsl(std::min<Clock::duration>(deadline - now, options_.lease / 2)));
  }
}

void WorkerRegistry::AbortAttempt(int64_t attempt_id) {
  absl::MutexLock lock(&mu_);
  auto a = attempts_.find(attempt_id);
  if (a == attempts_.end()) return;
  a->second.aborted = true;
  // Assignments not yet fetched are withdrawn: those ranks never started.
  for (size_t r = 0; r < a->second.members.size(); ++r) {
    auto w = workers_.find(a->second.members[r]);
    if (w != workers_.end() && w->second.pending.has_value() &&
        w->second.pending->attempt() == attempt_id) {
      w->second.pending.reset();
      w->second.busy_attempt = 0;
      RecordOutcome(a->second, static_cast<int>(r), absl::AbortedError("withdrawn before it started"),
                    /*transient=*/true);
    }
  }
  changed_.SignalAll();
}

void WorkerRegistry::FinishAttempt(int64_t attempt_id) {
  absl::MutexLock lock(&mu_);
  auto a = attempts_.find(attempt_id);
  if (a == attempts_.end()) return;
  const std::string prefix = a->second.store_prefix;
  for (auto it = store_.lower_bound(prefix); it != store_.end() && absl::StartsWith(it->first, prefix);) {
    it = store_.erase(it);
  }
  // Members that have not reported stay busy until they do (or are lost): their heartbeats tell them
  // to stop, the attempt being unknown now.
  attempts_.erase(a);
  changed_.SignalAll();
}

std::string WorkerRegistry::Describe(const std::vector<std::string>& members) {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> parts;
  for (const std::string& id : members) {
    auto w = workers_.find(id);
    parts.push_back(w == workers_.end() ? id : absl::StrCat(id, " (", w->second.address, ")"));
  }
  return absl::StrJoin(parts, ", ");
}

int WorkerRegistry::LiveWorkers() {
  absl::MutexLock lock(&mu_);
  ExpireLeases();
  return static_cast<int>(workers_.size());
}

}  // namespace ptq::server
