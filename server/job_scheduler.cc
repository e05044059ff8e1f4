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
    job.set_state(v1::JOB_STATE_QUEUED);
    job.set_start_time_ms(0);
    if (auto s = store_.Update(job); !s.ok()) return s;
    // The block store may hold one block more than the store records (killed between the two
    // writes): the run says exactly where it resumes (RunJob).
    Log(job.id(), absl::StrCat("coordinator restarted while the job was running (", job.blocks_done(),
                               " of ", job.num_blocks(), " blocks finished); re-queued: it resumes "
                               "from its last saved block, not from scratch"));
    v1::JobEvent requeued;  // for watchers that resume across the restart
    requeued.set_job_id(job.id());
    *requeued.mutable_state() = job;
    Publish(std::move(requeued));
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
  v1::JobEvent queued;  // the first of the job's stream (no watcher yet: for those that replay it)
  queued.set_job_id(job.id());
  *queued.mutable_state() = job;
  Publish(std::move(queued));
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

absl::StatusOr<JobScheduler::Watch> JobScheduler::StartWatch(const std::string& id,
                                                             std::optional<int64_t> after_sequence) {
  // Under mu_, which every Publish also holds: no event falls between the snapshot, the stored
  // events and the subscription.
  std::lock_guard<std::mutex> lock(mu_);
  Watch watch;
  auto job = GetLocked(id);
  if (!job.ok()) return job.status();
  watch.job = *std::move(job);
  auto last = store_.LastEventSequence(id);
  if (!last.ok()) return last.status();
  watch.last_sequence = *last;
  if (after_sequence.has_value()) {
    auto missed = store_.Events(id, *after_sequence);
    if (!missed.ok()) return missed.status();
    watch.missed = *std::move(missed);
  }
  watch.events = hub_.Subscribe(id);
  return watch;
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
  *event.mutable_state() = job;
  Publish(std::move(event));
  UpdateGauge();
}

void JobScheduler::Publish(v1::JobEvent event) {
  event.set_time_ms(NowMs());
  // Stored first: a watcher can only have seen events that a restarted coordinator still has.
  auto sequence = store_.AppendEvent(event);
  if (sequence.ok()) {
    event.set_sequence(*sequence);
  } else {
    spdlog::error("{}", sequence.status().ToString());  // live watchers still get it, unnumbered
  }
  hub_.Publish(event);
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
    bool ran_before = false;
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
      // Progress recorded by an earlier run of this job (interrupted by a restart or a stop).
      ran_before = stored->num_blocks() > 0 || stored->layers_done() > 0;
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
    RunJob(std::move(job), ran_before);
  }
}

void JobScheduler::RunJob(v1::Job job, bool ran_before) {
  const std::string id = job.id();
  // Where this run starts, said once: the blocks the pipeline reloads (saved by an earlier run)
  // arrive as `reloaded` layer and block events before the first layer it quantizes.
  int64_t reloaded = 0;
  bool start_said = false;
  auto say_start = [&](int64_t num_blocks) {
    if (start_said) return;
    start_said = true;
    if (reloaded >= num_blocks && num_blocks > 0) {
      Log(id, absl::StrCat("resumed: all ", num_blocks, " blocks were saved by an earlier run and "
                           "are reloaded, not quantized again"));
    } else if (reloaded > 0) {
      Log(id, absl::StrCat("resumed from block ", reloaded + 1, " of ", num_blocks, ": ",
                           reloaded == 1 ? "block 1 was" : absl::StrCat("blocks 1-", reloaded, " were"),
                           " saved by an earlier run and ", reloaded == 1 ? "is" : "are",
                           " reloaded, not quantized again"));
    } else if (ran_before) {
      Log(id, absl::StrCat("no block of the earlier run was saved: quantizing from block 1 of ",
                           num_blocks));
    }
  };
  ExecutionHooks hooks;
  hooks.job_id = id;
  hooks.cancel = &cancel_;
  hooks.on_layer = [&](const v1::LayerProgress& p) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!p.reloaded()) say_start(p.num_blocks());
    running_->set_num_blocks(p.num_blocks());
    running_->set_layers_done(p.layers_done());
    running_->set_layers_total(p.layers_total());
    v1::JobEvent event;
    event.set_job_id(id);
    *event.mutable_layer() = p;
    Publish(std::move(event));
    Log(id, absl::StrFormat("block %d/%d %s loss %.6g (relative %.4g), %d/%d layers, ETA %.1f s%s",
                            p.block() + 1, p.num_blocks(), p.layer(), p.loss(), p.relative_loss(),
                            p.layers_done(), p.layers_total(), p.eta_seconds(),
                            p.reloaded() ? " (reloaded, not quantized again)" : ""));
  };
  hooks.on_block = [&](const v1::BlockProgress& p) {
    std::lock_guard<std::mutex> lock(mu_);
    if (p.reloaded()) {
      ++reloaded;
      if (p.block() + 1 == p.num_blocks()) say_start(p.num_blocks());
    } else {
      say_start(p.num_blocks());
    }
    running_->set_num_blocks(p.num_blocks());
    running_->set_blocks_done(p.block() + 1);
    // Durable per-block progress (what a restart reports); a block event for watchers.
    if (auto s = store_.Update(*running_); !s.ok()) spdlog::error("{}", s.ToString());
    v1::JobEvent event;
    event.set_job_id(id);
    *event.mutable_block() = p;
    Publish(std::move(event));
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
