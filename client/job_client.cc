#include "client/job_client.h"

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/coordinator_channel.h"
#include "proto/ptq/v1/job_state.h"

namespace ptq::client {
namespace {

// Unary calls answer from the coordinator's memory or store; Submit also reads the model's config.
constexpr std::chrono::seconds kUnaryDeadline(30);
void SetDeadline(grpc::ClientContext& context) {
  context.set_deadline(std::chrono::system_clock::now() + kUnaryDeadline);
}

}  // namespace

JobClient::JobClient(const std::string& address, std::string token,
                     std::shared_ptr<grpc::ChannelCredentials> credentials)
    : address_(address),
      token_(std::move(token)),
      stub_(v1::JobService::NewStub(NewCoordinatorChannel(address, std::move(credentials)))) {}

std::unique_ptr<grpc::ClientContext> JobClient::NewContext(bool deadline) const {
  auto context = std::make_unique<grpc::ClientContext>();
  if (deadline) SetDeadline(*context);
  if (!token_.empty()) context->AddMetadata("authorization", "Bearer " + token_);
  return context;
}

absl::Status JobClient::Convert(const grpc::Status& status) const {
  if (status.ok()) return absl::OkStatus();
  const auto code = static_cast<absl::StatusCode>(status.error_code());
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE ||
      status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    return absl::Status(code, absl::StrCat("coordinator ", address_, ": ", status.error_message()));
  }
  return absl::Status(code, status.error_message());
}

absl::StatusOr<v1::Job> JobClient::Submit(const v1::JobSpec& spec) {
  auto context_owner = NewContext(/*deadline=*/true);
  grpc::ClientContext& context = *context_owner;
  v1::SubmitRequest request;
  *request.mutable_spec() = spec;
  v1::Job job;
  if (auto s = Convert(stub_->Submit(&context, request, &job)); !s.ok()) return s;
  return job;
}

absl::StatusOr<v1::Job> JobClient::Get(const std::string& job_id) {
  Reconnector reconnector(reconnect_);
  v1::GetJobRequest request;
  request.set_job_id(job_id);
  while (true) {
    auto context = NewContext(/*deadline=*/true);
    v1::Job job;
    absl::Status s = Convert(stub_->Get(context.get(), request, &job));
    if (s.ok()) {
      reconnector.Answered();
      return job;
    }
    if (auto give_up = reconnector.BeforeRetry(s); !give_up.ok()) return give_up;
  }
}

absl::StatusOr<std::vector<v1::Job>> JobClient::List() {
  auto context_owner = NewContext(/*deadline=*/true);
  grpc::ClientContext& context = *context_owner;
  v1::ListJobsResponse response;
  if (auto s = Convert(stub_->List(&context, v1::ListJobsRequest(), &response)); !s.ok()) return s;
  return std::vector<v1::Job>(response.jobs().begin(), response.jobs().end());
}

absl::StatusOr<v1::Job> JobClient::Cancel(const std::string& job_id) {
  auto context_owner = NewContext(/*deadline=*/true);
  grpc::ClientContext& context = *context_owner;
  v1::CancelJobRequest request;
  request.set_job_id(job_id);
  v1::Job job;
  if (auto s = Convert(stub_->Cancel(&context, request, &job)); !s.ok()) return s;
  return job;
}

absl::Status JobClient::Watch(const std::string& job_id,
                              const std::function<void(const v1::JobEvent&)>& on_event) {
  Reconnector reconnector(reconnect_);
  std::optional<int64_t> after;  // the sequence of the last event received
  while (true) {
    auto context = NewContext(/*deadline=*/false);  // no deadline: a job may run for hours
    v1::WatchJobRequest request;
    request.set_job_id(job_id);
    if (after.has_value()) request.set_after_sequence(*after);
    auto reader = stub_->Watch(context.get(), request);
    bool answered = false;  // said once per stream
    auto answer = [&] {
      if (answered) return;
      answered = true;
      reconnector.Answered(after.has_value() ? absl::StrCat("; resuming after event ", *after)
                                             : std::string());
    };
    reader->WaitForInitialMetadata();
    if (context->GetServerInitialMetadata().count(v1::kWatchReadyMetadataKey) > 0) answer();
    v1::JobEvent event;
    while (reader->Read(&event)) {
      answer();
      // The first event of a new stream carries the sequence it stands for; an unnumbered one
      // (the coordinator could not store it) must not move the position back.
      if (!after.has_value() || event.sequence() > *after) after = event.sequence();
      on_event(event);
    }
    absl::Status s = Convert(reader->Finish());
    if (s.ok()) return s;
    if (auto give_up = reconnector.BeforeRetry(s); !give_up.ok()) return give_up;
  }
}

absl::Status JobClient::Logs(const std::string& job_id, bool follow,
                             const std::function<void(const v1::LogLine&)>& on_line) {
  Reconnector reconnector(reconnect_);
  int64_t received = 0;
  while (true) {
    auto context = NewContext(/*deadline=*/!follow);
    v1::LogsRequest request;
    request.set_job_id(job_id);
    request.set_follow(follow);
    request.set_first_line(received);
    auto reader = stub_->Logs(context.get(), request);
    const int64_t first = received;
    v1::LogLine line;
    while (reader->Read(&line)) {
      if (received == first) reconnector.Answered(absl::StrCat("; resuming after line ", first));
      ++received;
      on_line(line);
    }
    absl::Status s = Convert(reader->Finish());
    if (s.ok()) {
      reconnector.Answered();
      return s;
    }
    if (auto give_up = reconnector.BeforeRetry(s); !give_up.ok()) return give_up;
  }
}

}  // namespace ptq::client
