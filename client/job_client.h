// A thin wrapper over the JobService stub: one method per RPC, each returning absl::Status with one
// readable line (the coordinator's message, or why it could not be reached).
//
// Thread safety: a JobClient may be used from several threads (gRPC stubs are thread-safe).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include <grpcpp/security/credentials.h>

#include "ptq/v1/job_service.grpc.pb.h"

namespace ptq::client {

class JobClient {
 public:
  // `address` is HOST:PORT of a coordinator. Connects lazily: errors show on the first call.
  // `token`: sent as `authorization: Bearer TOKEN` when not empty.
  // `credentials`: transport security (nullptr: plaintext).
  explicit JobClient(const std::string& address, std::string token = "",
                     std::shared_ptr<grpc::ChannelCredentials> credentials = nullptr);

  absl::StatusOr<v1::Job> Submit(const v1::JobSpec& spec);
  absl::StatusOr<v1::Job> Get(const std::string& job_id);
  absl::StatusOr<std::vector<v1::Job>> List();
  absl::StatusOr<v1::Job> Cancel(const std::string& job_id);
  // Calls `on_event` for every event until the stream ends (after the job's final state).
  absl::Status Watch(const std::string& job_id,
                     const std::function<void(const v1::JobEvent&)>& on_event);
  // Calls `on_line` for every log line; with `follow`, until the job has finished.
  absl::Status Logs(const std::string& job_id, bool follow,
                    const std::function<void(const v1::LogLine&)>& on_line);

 private:
  absl::Status Convert(const grpc::Status& status) const;

  // A context carrying the token (and the unary deadline when `deadline`).
  std::unique_ptr<grpc::ClientContext> NewContext(bool deadline) const;

  std::string address_;
  std::string token_;
  std::unique_ptr<v1::JobService::Stub> stub_;
};

}  // namespace ptq::client
