#include "worker/worker_agent.h"

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <condition_variable>
#include <cstdlib>
#include <optional>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/coordinator_channel.h"
#include "common/metric_names.h"
#include "common/model_fingerprint.h"
#include "common/version.h"
#include "ptq/v1/worker_service.grpc.pb.h"
#include "core/dist/collective.h"
#include "core/pipeline/device.h"
#include "core/pipeline/quantize_pipeline.h"
#include "worker/job_runner.h"
#include "worker/quantize_spec.h"
#ifdef PTQ_HAVE_GLOO
#include "worker/coordinator_store.h"
#include "worker/gloo_collective.h"
#endif

namespace ptq::worker {
namespace {

constexpr std::chrono::milliseconds kAssignmentPoll(3000);
constexpr std::chrono::seconds kRetry(1);

absl::Status FromGrpc(const grpc::Status& s) {
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

class Agent {
 public:
  Agent(const WorkerAgentOptions& options, const std::atomic<bool>& stop,
        std::shared_ptr<grpc::ChannelCredentials> credentials)
      : options_(options),
        stop_(stop),
        stub_(v1::WorkerService::NewStub(NewCoordinatorChannel(options.coordinator, credentials))) {}

  absl::Status Run() {
    while (!stop_.load()) {
      absl::Status registered = Register();
      if (absl::IsFailedPrecondition(registered) || absl::IsPermissionDenied(registered) ||
          absl::IsUnauthenticated(registered) || absl::IsInvalidArgument(registered)) {
        return registered;
      }
      if (!registered.ok()) {
        std::this_thread::sleep_for(kRetry);
        continue;
      }
      forgotten_.store(false);
      std::thread heartbeat([this] { HeartbeatLoop(); });
      ServeAssignments();
      {
        std::lock_guard<std::mutex> lock(mu_);
        heartbeat_stop_ = true;
      }
      wake_.notify_all();
      heartbeat.join();
      heartbeat_stop_ = false;
      if (!refusal_.ok()) return refusal_;
    }
    return absl::OkStatus();
  }

 private:
  std::unique_ptr<grpc::ClientContext> Context(std::chrono::milliseconds timeout) {
    auto context = std::make_unique<grpc::ClientContext>();
    if (!options_.token.empty()) context->AddMetadata("authorization", "Bearer " + options_.token);
    context->set_deadline(std::chrono::system_clock::now() + timeout);
    return context;
  }

  absl::Status Register() {
    v1::RegisterWorkerRequest request;
    request.set_address(options_.host);
    request.set_version(kVersion);
    request.set_device(options_.device);
    request.mutable_resources()->set_cpu_cores(static_cast<int32_t>(std::thread::hardware_concurrency()));
    v1::RegisterWorkerResponse response;
    auto context = Context(std::chrono::seconds(10));
    grpc::Status s = stub_->Register(context.get(), request, &response);
    if (!s.ok()) {
      if (!waiting_logged_) {
        spdlog::warn("cannot register with {}: {}", options_.coordinator, s.error_message());
        waiting_logged_ = true;
      }
      return FromGrpc(s);
    }
    waiting_logged_ = false;
    worker_id_ = response.worker_id();
    lease_ = std::chrono::milliseconds(std::max<int64_t>(response.lease_ms(), 300));
    spdlog::info("registered with {} as {} (lease {} ms)", options_.coordinator, worker_id_,
                 lease_.count());
    return absl::OkStatus();
  }

  void HeartbeatLoop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!heartbeat_stop_) {
      wake_.wait_for(lock, lease_ / 3, [this] { return heartbeat_stop_; });
      if (heartbeat_stop_) break;
      lock.unlock();
      v1::HeartbeatRequest request;
      request.set_worker_id(worker_id_);
      v1::HeartbeatResponse response;
      auto context = Context(lease_);
      grpc::Status s = stub_->Heartbeat(context.get(), request, &response);
      lock.lock();
      if (s.ok()) {
        metrics::CounterFor(metrics::GlobalRegistry(), metrics::names::kWorkerHeartbeats,
                            {{"worker", worker_id_}})
            .Increment();
        for (int64_t a : response.abort_attempts()) {
          if (a == attempt_.load() && !cancel_.load()) {
            spdlog::warn("the coordinator aborted attempt {}; stopping", a);
            cancel_.store(true);
          }
        }
      } else if (s.error_code() == grpc::StatusCode::NOT_FOUND ||
                 s.error_code() == grpc::StatusCode::FAILED_PRECONDITION) {
        // A restarted coordinator (or one that dropped us): our attempt is void.
        spdlog::warn("coordinator: {}; abandoning the current work", s.error_message());
        if (s.error_code() == grpc::StatusCode::FAILED_PRECONDITION) refusal_ = FromGrpc(s);
        forgotten_.store(true);
        cancel_.store(true);
      }
      WatchAbortedAttempt();
    }
  }

  // An aborted attempt stops at its next layer boundary, unless this rank is blocked in a collective
  // with a peer that stopped without closing its connections (SIGSTOP, a hung GPU): Gloo cannot be
  // interrupted, so after the grace period the process exits and its supervisor (the StatefulSet)
  // starts a fresh one; its lease then expires and the group re-forms without it.
  void WatchAbortedAttempt() {
    const int64_t attempt = attempt_.load();
    if (attempt == 0 || !cancel_.load()) {
      aborted_since_.reset();
      return;
    }
    const auto now = std::chrono::steady_clock::now();
    if (!aborted_since_ || aborted_attempt_ != attempt) {
      aborted_since_ = now;
      aborted_attempt_ = attempt;
    }
    // A layer finished since the abort: this rank is computing towards its next cancellation check,
    // not blocked; the grace counts from its latest layer.
    const std::chrono::steady_clock::time_point layer_done{
        std::chrono::steady_clock::duration(last_layer_done_ticks_.load())};
    if (layer_done > *aborted_since_) aborted_since_ = layer_done;
    if (now - *aborted_since_ > options_.abort_grace) {
      spdlog::error("attempt {} was aborted and has finished no layer for {} s: blocked (a collective "
                    "with a peer that stopped?); exiting so that a fresh worker takes this one's place",
                    attempt, std::chrono::duration_cast<std::chrono::seconds>(now - *aborted_since_).count());
      std::_Exit(75);  // EX_TEMPFAIL: a supervisor should restart it
    }
  }

  void ServeAssignments() {
    while (!stop_.load() && !forgotten_.load()) {
      v1::GetAssignmentRequest request;
      request.set_worker_id(worker_id_);
      request.set_wait_ms(kAssignmentPoll.count());
      v1::GetAssignmentResponse response;
      auto context = Context(kAssignmentPoll + std::chrono::seconds(10));
      grpc::Status s = stub_->GetAssignment(context.get(), request, &response);
      if (s.error_code() == grpc::StatusCode::NOT_FOUND ||
          s.error_code() == grpc::StatusCode::FAILED_PRECONDITION) {
        forgotten_.store(true);
        if (s.error_code() == grpc::StatusCode::FAILED_PRECONDITION) {
          std::lock_guard<std::mutex> lock(mu_);
          refusal_ = FromGrpc(s);
        }
        return;
      }
      if (!s.ok()) {
        std::this_thread::sleep_for(kRetry);
        continue;
      }
      if (response.has_assignment()) RunAssignment(response.assignment());
    }
  }

  void Report(const v1::Assignment& a, const absl::Status& status, const v1::JobResult* result,
              bool refuses = false) {
    v1::ReportResultRequest request;
    request.set_worker_id(worker_id_);
    request.set_attempt(a.attempt());
    request.set_code(static_cast<int32_t>(status.code()));
    request.set_message(std::string(status.message()));
    request.set_worker_refuses(refuses);
    if (result != nullptr) *request.mutable_result() = *result;
    for (int tries = 0; tries < 10 && !forgotten_.load(); ++tries) {
      v1::ReportResultResponse response;
      auto context = Context(std::chrono::seconds(10));
      grpc::Status s = stub_->ReportResult(context.get(), request, &response);
      if (s.ok() || s.error_code() != grpc::StatusCode::UNAVAILABLE) return;
      std::this_thread::sleep_for(kRetry);
    }
  }

  void ReportProgress(const v1::Assignment& a, v1::ReportProgressRequest request) {
    request.set_worker_id(worker_id_);
    request.set_attempt(a.attempt());
    v1::ReportProgressResponse response;
    auto context = Context(std::chrono::seconds(10));
    grpc::Status s = stub_->ReportProgress(context.get(), request, &response);
    if (s.ok() && response.abort()) cancel_.store(true);
  }

  // Rank 0's last question before it replaces the output: is this attempt still the coordinator's?
  // An unreachable coordinator is waited for (it may be restarting; the checkpoint waits in its
  // staging folder, the finished blocks in the block store): a restarted one has forgotten this
  // worker and runs the job again, and that run must find the output free, not taken by us.
  absl::Status ConfirmCommit(const v1::Assignment& a) {
    v1::ReportProgressRequest request;
    request.set_worker_id(worker_id_);
    request.set_attempt(a.attempt());
    request.set_ready_to_commit(true);
    bool waiting_logged = false;
    grpc::Status s;
    while (!stop_.load() && !forgotten_.load() && !cancel_.load()) {
      v1::ReportProgressResponse response;
      auto context = Context(std::chrono::seconds(10));
      s = stub_->ReportProgress(context.get(), request, &response);
      if (s.ok()) {
        if (!response.abort()) return absl::OkStatus();
        break;
      }
      if (s.error_code() != grpc::StatusCode::UNAVAILABLE &&
          s.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
        break;
      }
      if (!waiting_logged) {
        spdlog::warn("attempt {} of job {}: the checkpoint is complete; waiting for the coordinator "
                     "to confirm the attempt before committing it ({})",
                     a.attempt(), a.job_id(), s.error_message());
        waiting_logged = true;
      }
      std::this_thread::sleep_for(kRetry);
    }
    return absl::AbortedError(absl::StrCat(
        "attempt ", a.attempt(), " is no longer the coordinator's",
        s.ok() ? std::string() : absl::StrCat(" (", s.error_message(), ")"),
        "; its checkpoint is not committed, its finished blocks stay for the attempt that replaces it"));
  }

  void RunAssignment(const v1::Assignment& a) {
    cancel_.store(false);
    attempt_.store(a.attempt());
    spdlog::info("attempt {} of job {}: rank {} of {}", a.attempt(), a.job_id(), a.rank(), a.size());
    auto fingerprint = ModelFingerprint(a.spec().model_path());
    if (!fingerprint.ok() || *fingerprint != a.model_fingerprint()) {
      const std::string why = absl::StrCat(
          "this worker sees ",
          fingerprint.ok() ? absl::StrCat("model fingerprint ", *fingerprint)
                           : std::string(fingerprint.status().message()),
          " at ", a.spec().model_path(), ", the coordinator ", a.model_fingerprint());
      spdlog::error("refusing attempt {}: {}", a.attempt(), why);
      Report(a, absl::FailedPreconditionError(why), nullptr, /*refuses=*/true);
      attempt_.store(0);
      return;
    }
    std::unique_ptr<Collective> group;
    if (a.size() == 1) {
      group = MakeSingleProcessCollective();
    } else {
#ifdef PTQ_HAVE_GLOO
      CoordinatorStore store(*stub_, worker_id_, a.store_prefix(), options_.token);
      GlooOptions gloo;
      gloo.hostname = options_.host;
      gloo.timeout = options_.collective_timeout;
      auto connected = ConnectGloo(store, a.rank(), a.size(), gloo);
      if (!connected.ok()) {
        Report(a, connected.status(), nullptr);
        attempt_.store(0);
        return;
      }
      group = *std::move(connected);
#else
      Report(a, absl::UnimplementedError("this worker was built without Gloo (libgloo-dev)"), nullptr);
      attempt_.store(0);
      return;
#endif
    }
    JobHooks hooks;
    hooks.group = group.get();
    hooks.cancel = &cancel_;
    hooks.job_id = a.job_id();
    // Every rank notes its progress: an aborted attempt that still finishes layers is busy, not
    // blocked in a collective (WatchAbortedAttempt).
    hooks.on_layer = [&](const LayerProgress& p) {
      last_layer_done_ticks_.store(std::chrono::steady_clock::now().time_since_epoch().count());
      if (a.rank() != 0) return;
      v1::ReportProgressRequest r;
      *r.mutable_layer() = LayerProgressToProto(p);
      ReportProgress(a, std::move(r));
    };
    if (a.rank() == 0) {
      hooks.on_block = [&](int64_t block, int64_t num_blocks, bool reloaded) {
        v1::ReportProgressRequest r;
        r.mutable_block()->set_block(block);
        r.mutable_block()->set_num_blocks(num_blocks);
        r.mutable_block()->set_reloaded(reloaded);
        ReportProgress(a, std::move(r));
      };
      hooks.before_commit = [&] { return ConfirmCommit(a); };
    }
    auto report = RunQuantizeSpec(a.spec(), hooks, options_.device);
    group.reset();  // close the peers' connections before reporting
    if (report.ok()) {
      spdlog::info("attempt {} done", a.attempt());
      const v1::JobResult result = JobResultFromReport(*report);
      Report(a, absl::OkStatus(), a.rank() == 0 ? &result : nullptr);
    } else {
      spdlog::warn("attempt {} ended: {}", a.attempt(), report.status().ToString());
      Report(a, report.status(), nullptr);
    }
    attempt_.store(0);
  }

  const WorkerAgentOptions& options_;
  const std::atomic<bool>& stop_;
  std::unique_ptr<v1::WorkerService::Stub> stub_;
  std::string worker_id_;
  std::chrono::milliseconds lease_{5000};
  bool waiting_logged_ = false;

  std::mutex mu_;
  std::condition_variable wake_;
  bool heartbeat_stop_ = false;
  absl::Status refusal_;  // guarded by mu_ while the heartbeat thread runs
  std::atomic<bool> forgotten_{false};
  std::atomic<bool> cancel_{false};
  std::atomic<int64_t> attempt_{0};
  std::atomic<std::chrono::steady_clock::rep> last_layer_done_ticks_{0};  // steady_clock ticks
  std::optional<std::chrono::steady_clock::time_point> aborted_since_;  // heartbeat thread only
  int64_t aborted_attempt_ = 0;
};

}  // namespace

absl::Status RunWorkerAgent(const WorkerAgentOptions& options, const std::atomic<bool>& stop) {
  // Refuse a device this process cannot use before registering: no job would run on it.
  if (auto device = ResolveDevice(options.device); !device.ok()) return device.status();
  auto credentials = ChannelCredentialsFor(options.tls);
  if (!credentials.ok()) return credentials.status();
  Agent agent(options, stop, *credentials);
  return agent.Run();
}

}  // namespace ptq::worker
