#include "server/job_scheduler.h"

#include <spdlog/spdlog.h>

#include <cctype>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/metric_names.h"
#include "core/checkpoint/output_folder.h"
#include "worker/quantize_spec.h"

namespace ptq::server {
namespace {

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

constexpr v1::JobState kStates[] = {v1::JOB_STATE_QUEUED, v1::JOB_STATE_RUNNING,
                                    v1::JOB_STATE_SUCCEEDED, v1::JOB_STATE_FAILED,
                                    v1::JOB_STATE_CANCELLED};

}  // namespace

JobScheduler::JobScheduler(JobStore& store, JobExecutor& executor, metrics::Registry& registry)
    : store_(store), executor_(executor), registry_(registry), random_(std::random_device{}()) {}

JobScheduler::~JobScheduler() { Stop(); }

absl::Status JobScheduler::Start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (started_) return absl::FailedPreconditionError("scheduler already started");
  auto jobs = store_.List();
  if (!jobs.ok()) return jobs.status();
  // Interrupted jobs first: they were taken from the queue before the ones still queued.
  for (v1::Job& job : *jobs) {
    if (job.state() != v1::JOB_STATE_RUNNING) continue;
    // Restarted from scratch: per-block resume (from blocks_done) is later work.
    job.set_state(v1::JOB_STATE_QUEUED);
    job.set_start_time_ms(0);
    if (auto s = store_.Update(job); !s.ok()) return s;
    Log(job.id(), absl::StrCat("coordinator restarted while the job was running (", job.blocks_done(),
                               " of ", job.num_blocks(), " blocks done); re-queued, restarting from scratch"));
    queue_.push_back(job.id());
  }
  for (const v1::Job& job : *jobs) {
    if (job.state() == v1::JOB_STATE_QUEUED) queue_.push_back(job.id());
  }
  UpdateGauge();
  started_ = true;
  runner_ = std::thread([this] { RunLoop(); });
  return absl::OkStatus();
}

void JobScheduler::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_.exchange(true)) return;
    cancel_.store(true);
  }
  queue_ready_.notify_all();
  if (runner_.joinable()) runner_.join();
  hub_.Close();
}

std::string JobScheduler::NewId() {
  return absl::StrFormat("job-%012x", random_() & 0xffffffffffffULL);
}

absl::StatusOr<v1::Job> JobScheduler::Submit(const v1::JobSpec& spec, const std::string& owner,
                                             int max_queued_per_owner) {
  if (auto s = executor_.Validate(spec); !s.ok()) return s;  // outside the lock: reads files
  std::lock_guard<std::mutex> lock(mu_);
  if (stopping_.load()) return absl::UnavailableError("coordinator is shutting down");
  if (max_queued_per_owner > 0) {
    int queued = 0;
    for (const std::string& id : queue_) {
      auto it = owner_of_.find(id);
      if (it != owner_of_.end() && it->second == owner) ++queued;
    }
    if (queued >= max_queued_per_owner) {
      return absl::ResourceExhaustedError(absl::StrCat(
          queued, " of your jobs are already queued (the limit per client); wait or cancel one"));
    }
  }
  v1::Job job;
  job.set_id(NewId());
  job.set_state(v1::JOB_STATE_QUEUED);
  *job.mutable_spec() = spec;
  job.set_owner(owner);
  job.set_create_time_ms(NowMs());
  if (auto s = store_.Insert(job); !s.ok()) return s;
  Log(job.id(), absl::StrCat("queued: ", worker::QuantizeOptionsFromSpec(spec).method, " of ",
                             spec.model_path(), " to ", spec.output_path()));
  queue_.push_back(job.id());
  owner_of_[job.id()] = owner;
  UpdateGauge();
  queue_ready_.notify_all();
  return job;
}

absl::StatusOr<v1::Job> JobScheduler::GetLocked(const std::string& id) {
  if (running_.has_value() && running_->id() == id) return *running_;
  return store_.Get(id);
}

absl::StatusOr<v1::Job> JobScheduler::Get(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  return GetLocked(id);
}

absl::StatusOr<std::vector<v1::Job>> JobScheduler::List() {
  std::lock_guard<std::mutex> lock(mu_);
  auto jobs = store_.List();
  if (!jobs.ok()) return jobs.status();
  if (running_.has_value()) {
    for (v1::Job& job : *jobs) {
      if (job.id() == running_->id()) job = *running_;
    }
  }
  return jobs;
}

absl::StatusOr<v1::Job> JobScheduler::Cancel(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  if (running_.has_value() && running_->id() == id) {
    if (!cancel_requested_) Log(id, "cancel requested; stopping at the next layer");
    cancel_requested_ = true;
    cancel_.store(true);
    return *running_;
  }
  auto job = store_.Get(id);
  if (!job.ok()) return job.status();
  switch (job->state()) {
    case v1::JOB_STATE_QUEUED: {
      std::erase(queue_, id);
      owner_of_.erase(id);
      job->set_state(v1::JOB_STATE_CANCELLED);
      job->set_error("cancelled before it started");
      job->set_end_time_ms(NowMs());
      Log(id, "cancelled before it started");
      SaveAndPublish(*job);
      return *job;
    }
    case v1::JOB_STATE_CANCELLED:
      return *job;
    default:
      return absl::FailedPreconditionError(
          absl::StrCat("job ", id, " has already finished (", StateName(job->state()), ")"));
  }
}

absl::StatusOr<JobScheduler::Watch> JobScheduler::StartWatch(const std::string& id) {
  // Under mu_, which every Publish also holds: no event falls between the snapshot and the
  // subscription.
  std::lock_guard<std::mutex> lock(mu_);
  auto job = GetLocked(id);
  if (!job.ok()) return job.status();
  return Watch{*std::move(job), hub_.Subscribe(id)};
}

absl::StatusOr<std::vector<v1::LogLine>> JobScheduler::Logs(const std::string& id, int64_t first) {
  if (auto job = Get(id); !job.ok()) return job.status();
  return store_.Logs(id, first);
}

void JobScheduler::Log(const std::string& id, const std::string& text) {
  v1::LogLine line;
  line.set_time_ms(NowMs());
  line.set_text(text);
  if (auto s = store_.AppendLog(id, line); !s.ok()) spdlog::error("{}", s.ToString());
  spdlog::info("job {}: {}", id, text);
}

void JobScheduler::SaveAndPublish(const v1::Job& job) {
  if (auto s = store_.Update(job); !s.ok()) spdlog::error("{}", s.ToString());
  v1::JobEvent event;
  event.set_job_id(job.id());
  event.set_time_ms(NowMs());
  *event.mutable_state() = job;
  hub_.Publish(event);
  UpdateGauge();
}

void JobScheduler::UpdateGauge() {
  auto counts = store_.CountByState();
  if (!counts.ok()) {
    spdlog::error("{}", counts.status().ToString());
    return;
  }
  for (v1::JobState state : kStates) {
    std::string label = StateName(state);
    for (char& c : label) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    metrics::GaugeFor(registry_, metrics::names::kJobs, {{"state", label}})
        .Set(static_cast<double>((*counts)[state]));
  }
}

void JobScheduler::RunLoop() {
  while (true) {
    v1::Job job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      queue_ready_.wait(lock, [this] { return stopping_.load() || !queue_.empty(); });
      if (stopping_.load()) return;
      const std::string id = queue_.front();
      queue_.pop_front();
      owner_of_.erase(id);
      auto stored = store_.Get(id);
      if (!stored.ok()) {
        spdlog::error("job {} vanished from the queue: {}", id, stored.status().ToString());
        continue;
      }
      if (stored->state() != v1::JOB_STATE_QUEUED) continue;
      job = *std::move(stored);
      job.set_state(v1::JOB_STATE_RUNNING);
      job.set_start_time_ms(NowMs());
      job.set_blocks_done(0);
      job.set_layers_done(0);
      job.set_error("");
      running_ = job;
      cancel_.store(false);
      cancel_requested_ = false;
      Log(job.id(), "started");
      SaveAndPublish(job);
    }
    RunJob(std::move(job));
  }
}

void JobScheduler::RunJob(v1::Job job) {
  const std::string id = job.id();
  ExecutionHooks hooks;
  hooks.job_id = id;
  hooks.cancel = &cancel_;
  hooks.on_layer = [this, &id](const v1::LayerProgress& p) {
    std::lock_guard<std::mutex> lock(mu_);
    running_->set_num_blocks(p.num_blocks());
    running_->set_layers_done(p.layers_done());
    running_->set_layers_total(p.layers_total());
    v1::JobEvent event;
    event.set_job_id(id);
    event.set_time_ms(NowMs());
    *event.mutable_layer() = p;
    hub_.Publish(event);
    Log(id, absl::StrFormat("block %d/%d %s loss %.6g (relative %.4g), %d/%d layers, ETA %.1f s",
                            p.block() + 1, p.num_blocks(), p.layer(), p.loss(), p.relative_loss(),
                            p.layers_done(), p.layers_total(), p.eta_seconds()));
  };
  hooks.on_block = [this, &id](const v1::BlockProgress& p) {
    std::lock_guard<std::mutex> lock(mu_);
    running_->set_num_blocks(p.num_blocks());
    running_->set_blocks_done(p.block() + 1);
    // Durable per-block progress (for resume, later); a block event for watchers.
    if (auto s = store_.Update(*running_); !s.ok()) spdlog::error("{}", s.ToString());
    v1::JobEvent event;
    event.set_job_id(id);
    event.set_time_ms(NowMs());
    *event.mutable_block() = p;
    hub_.Publish(event);
  };
  hooks.log = [this, &id](const std::string& line) {
    std::lock_guard<std::mutex> lock(mu_);
    Log(id, line);
  };
  absl::StatusOr<v1::JobResult> result = executor_.Run(job.spec(), hooks);

  std::lock_guard<std::mutex> lock(mu_);
  v1::Job done = *running_;
  running_.reset();
  if (!result.ok() && result.status().code() == absl::StatusCode::kCancelled && !cancel_requested_ &&
      stopping_.load()) {
    // Interrupted by Stop: back to QUEUED so the next coordinator runs it again.
    done.set_state(v1::JOB_STATE_QUEUED);
    done.set_start_time_ms(0);
    Log(id, "interrupted by coordinator shutdown; will resume from its last finished block on the next start");
    SaveAndPublish(done);
    return;
  }
  done.set_end_time_ms(NowMs());
  if (result.ok()) {
    done.set_state(v1::JOB_STATE_SUCCEEDED);
    *done.mutable_result() = *std::move(result);
    Log(id, absl::StrCat("succeeded: checkpoint ", done.result().checkpoint_path()));
  } else if (result.status().code() == absl::StatusCode::kCancelled && cancel_requested_) {
    RemoveBlockStore(done.spec().output_path());  // nothing to resume
    done.set_state(v1::JOB_STATE_CANCELLED);
    done.set_error(std::string(result.status().message()));
    Log(id, absl::StrCat("cancelled: ", result.status().message()));
  } else {
    // Finished blocks stay (OUT.blocks): submitting the same job again resumes from them.
    done.set_state(v1::JOB_STATE_FAILED);
    done.set_error(std::string(result.status().message()));
    Log(id, absl::StrCat("failed: ", result.status().message()));
  }
  SaveAndPublish(done);
}

}  // namespace ptq::server
