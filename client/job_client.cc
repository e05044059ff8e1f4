#include "client/job_client.h"

#include <grpcpp/grpcpp.h>

#include <chrono>

#include "absl/strings/str_cat.h"

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
      stub_(v1::JobService::NewStub(
          grpc::CreateChannel(address, credentials != nullptr ? credentials
                                                              : grpc::InsecureChannelCredentials()))) {}

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
  auto context_owner = NewContext(/*deadline=*/true);
  grpc::ClientContext& context = *context_owner;
  v1::GetJobRequest request;
  request.set_job_id(job_id);
  v1::Job job;
  if (auto s = Convert(stub_->Get(&context, request, &job)); !s.ok()) return s;
  return job;
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
  auto context_owner = NewContext(/*deadline=*/false);  // no deadline: a job may run for hours
  grpc::ClientContext& context = *context_owner;
  v1::WatchJobRequest request;
  request.set_job_id(job_id);
  auto reader = stub_->Watch(&context, request);
  v1::JobEvent event;
  while (reader->Read(&event)) on_event(event);
  return Convert(reader->Finish());
}

absl::Status JobClient::Logs(const std::string& job_id, bool follow,
                             const std::function<void(const v1::LogLine&)>& on_line) {
  auto context_owner = NewContext(/*deadline=*/!follow);
  grpc::ClientContext& context = *context_owner;
  v1::LogsRequest request;
  request.set_job_id(job_id);
  request.set_follow(follow);
  auto reader = stub_->Logs(&context, request);
  v1::LogLine line;
  while (reader->Read(&line)) on_line(line);
  return Convert(reader->Finish());
}

}  // namespace ptq::client
