#include "server/job_service.h"

#include "common/path_confinement.h"
#include "common/stable_hash.h"

#include <chrono>
#include <functional>
#include <optional>

#include "absl/strings/str_format.h"
#include <thread>


namespace ptq::server {
namespace {

// How often a streaming call looks at its client and at shutdown while it waits.
constexpr std::chrono::milliseconds kPollInterval(200);

// Who is calling, for per-client limits: the token (hashed, never stored) when there are tokens,
// else the peer's address without its port.
std::string ClientIdentity(const grpc::ServerContext& context) {
  const auto& metadata = context.client_metadata();
  if (auto it = metadata.find("authorization"); it != metadata.end()) {
    return absl::StrFormat("token %016x",
                           StableHash64(std::string_view(it->second.data(), it->second.size())));
  }
  std::string peer = context.peer();  // "ipv4:10.0.0.5:43210", "ipv6:[::1]:43210", "unix:..."
  if (auto colon = peer.rfind(':'); colon != std::string::npos && colon > peer.find(':')) {
    peer.resize(colon);
  }
  return "peer " + peer;
}

absl::Status RequireJobId(const std::string& id) {
  if (id.empty()) return absl::InvalidArgumentError("job_id is required");
  return absl::OkStatus();
}

v1::JobEvent StateEvent(const v1::Job& job) {
  v1::JobEvent event;
  event.set_job_id(job.id());
  event.set_time_ms(std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::system_clock::now().time_since_epoch())
                        .count());
  *event.mutable_state() = job;
  return event;
}

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  // absl::StatusCode and grpc::StatusCode share the canonical numbering.
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

absl::StatusOr<AccessRole> CallerRole(const AccessTokens& tokens, const grpc::ServerContext& context) {
  std::string header;
  const auto& metadata = context.client_metadata();
  if (auto it = metadata.find("authorization"); it != metadata.end()) {
    header.assign(it->second.data(), it->second.size());
  }
  return tokens.Authenticate(header);
}

grpc::Status JobServiceImpl::Authorize(const grpc::ServerContext* context, bool write) const {
  if (tokens_ == nullptr) return grpc::Status::OK;
  auto role = CallerRole(*tokens_, *context);
  if (!role.ok()) return ToGrpcStatus(role.status());
  return ToGrpcStatus(AccessTokens::Authorize(*role, write));
}

grpc::Status JobServiceImpl::Submit(grpc::ServerContext* context, const v1::SubmitRequest* request,
                                    v1::Job* response) {
  if (auto a = Authorize(context, /*write=*/true); !a.ok()) return a;
  if (!request->has_spec()) return ToGrpcStatus(absl::InvalidArgumentError("spec is required"));
  const v1::JobSpec& spec = request->spec();
  for (const auto& [path, what] : {std::pair{spec.model_path(), "model"},
                                   std::pair{spec.calib_path(), "calibration text"},
                                   std::pair{spec.eval_path(), "evaluation text"},
                                   std::pair{spec.output_path(), "output"}}) {
    if (path.empty() && std::string(what) == "evaluation text") continue;
    if (auto s = CheckPathUnderRoots(path, allowed_roots_, what); !s.ok()) return ToGrpcStatus(s);
  }
  auto job = scheduler_.Submit(request->spec(), ClientIdentity(*context), max_queued_per_client_);
  if (!job.ok()) return ToGrpcStatus(job.status());
  *response = *std::move(job);
  return grpc::Status::OK;
}

grpc::Status JobServiceImpl::Get(grpc::ServerContext* context, const v1::GetJobRequest* request,
                                 v1::Job* response) {
  if (auto a = Authorize(context, /*write=*/false); !a.ok()) return a;
  if (auto s = RequireJobId(request->job_id()); !s.ok()) return ToGrpcStatus(s);
  auto job = scheduler_.Get(request->job_id());
  if (!job.ok()) return ToGrpcStatus(job.status());
  *response = *std::move(job);
  return grpc::Status::OK;
}

grpc::Status JobServiceImpl::List(grpc::ServerContext* context, const v1::ListJobsRequest*,
                                  v1::ListJobsResponse* response) {
  if (auto a = Authorize(context, /*write=*/false); !a.ok()) return a;
  auto jobs = scheduler_.List();
  if (!jobs.ok()) return ToGrpcStatus(jobs.status());
  for (v1::Job& job : *jobs) *response->add_jobs() = std::move(job);
  return grpc::Status::OK;
}

grpc::Status JobServiceImpl::Cancel(grpc::ServerContext* context, const v1::CancelJobRequest* request,
                                    v1::Job* response) {
  if (auto a = Authorize(context, /*write=*/true); !a.ok()) return a;
  if (auto s = RequireJobId(request->job_id()); !s.ok()) return ToGrpcStatus(s);
  auto job = scheduler_.Cancel(request->job_id());
  if (!job.ok()) return ToGrpcStatus(job.status());
  *response = *std::move(job);
  return grpc::Status::OK;
}

grpc::Status JobServiceImpl::Watch(grpc::ServerContext* context,
                                   const v1::WatchJobRequest* request,
                                   grpc::ServerWriter<v1::JobEvent>* writer) {
  if (auto a = Authorize(context, /*write=*/false); !a.ok()) return a;
  if (auto s = RequireJobId(request->job_id()); !s.ok()) return ToGrpcStatus(s);
  std::optional<int64_t> after;
  if (request->has_after_sequence()) after = request->after_sequence();
  auto watch = scheduler_.StartWatch(request->job_id(), after);
  if (!watch.ok()) return ToGrpcStatus(watch.status());
  // The client knows it is connected before the first event (a resumed watch may wait for one).
  context->AddInitialMetadata(v1::kWatchReadyMetadataKey, "ready");
  writer->SendInitialMetadata();
  auto is_final = [](const v1::JobEvent& e) { return e.has_state() && IsFinished(e.state().state()); };
  bool final_sent = false;
  for (const v1::JobEvent& event : watch->missed) {
    if (!writer->Write(event)) return grpc::Status::CANCELLED;
    if (is_final(event)) return grpc::Status::OK;
  }
  // A new watch starts with the state; so does a resumed one whose job has finished without a
  // stored final event (a store from before events were kept, or a sequence past the end).
  if (!after.has_value() || IsFinished(watch->job.state())) {
    v1::JobEvent state = StateEvent(watch->job);
    state.set_sequence(watch->last_sequence);
    if (!writer->Write(state)) return grpc::Status::CANCELLED;
    final_sent = IsFinished(watch->job.state());
  }
  if (final_sent) return grpc::Status::OK;
  while (true) {
    if (context->IsCancelled()) return grpc::Status::CANCELLED;
    std::optional<v1::JobEvent> event = watch->events->Next(kPollInterval);
    if (!event.has_value()) {
      if (watch->events->Finished()) {
        return grpc::Status(grpc::StatusCode::UNAVAILABLE, "coordinator is shutting down");
      }
      continue;
    }
    if (!writer->Write(*event)) return grpc::Status::CANCELLED;  // the client went away
    if (is_final(*event)) return grpc::Status::OK;
  }
}

grpc::Status JobServiceImpl::Logs(grpc::ServerContext* context, const v1::LogsRequest* request,
                                  grpc::ServerWriter<v1::LogLine>* writer) {
  if (auto a = Authorize(context, /*write=*/false); !a.ok()) return a;
  if (auto s = RequireJobId(request->job_id()); !s.ok()) return ToGrpcStatus(s);
  if (request->first_line() < 0) {
    return ToGrpcStatus(absl::InvalidArgumentError("first_line must not be negative"));
  }
  int64_t sent = request->first_line();
  while (true) {
    // The state first, then the lines: a job seen finished has all its lines stored.
    auto job = scheduler_.Get(request->job_id());
    if (!job.ok()) return ToGrpcStatus(job.status());
    auto lines = scheduler_.Logs(request->job_id(), sent);
    if (!lines.ok()) return ToGrpcStatus(lines.status());
    for (const v1::LogLine& line : *lines) {
      if (!writer->Write(line)) return grpc::Status::CANCELLED;
      ++sent;
    }
    if (!request->follow() || IsFinished(job->state())) return grpc::Status::OK;
    if (scheduler_.stopping()) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "coordinator is shutting down");
    }
    if (context->IsCancelled()) return grpc::Status::CANCELLED;
    std::this_thread::sleep_for(kPollInterval);
  }
}

}  // namespace ptq::server
