// A thin wrapper over the JobService stub: one method per RPC, each returning absl::Status with one
// readable line (the coordinator's message, or why it could not be reached). Get, Watch and Logs
// reconnect while the coordinator is unreachable (client/reconnect.h), and Watch and Logs resume
// their stream where it broke: no event or line is shown twice or skipped.
//
// Thread safety: a JobClient may be used from several threads (gRPC stubs are thread-safe).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/reconnect.h"
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

  // For Get, Watch and Logs; the default retries for five minutes without saying so.
  void set_reconnect(ReconnectPolicy policy) { reconnect_ = std::move(policy); }

  absl::StatusOr<v1::Job> Submit(const v1::JobSpec& spec);
  absl::StatusOr<v1::Job> Get(const std::string& job_id);
  absl::StatusOr<std::vector<v1::Job>> List();
  absl::StatusOr<v1::Job> Cancel(const std::string& job_id);
  // Calls `on_event` for every event until the stream ends (after the job's final state). A stream
  // that breaks is opened again after the last event received (JobEvent.sequence).
  absl::Status Watch(const std::string& job_id,
                     const std::function<void(const v1::JobEvent&)>& on_event);
  // Calls `on_line` for every log line; with `follow`, until the job has finished. A stream that
  // breaks is opened again after the last line received.
  absl::Status Logs(const std::string& job_id, bool follow,
                    const std::function<void(const v1::LogLine&)>& on_line);

 private:
  absl::Status Convert(const grpc::Status& status) const;

  // A context carrying the token (and the unary deadline when `deadline`).
  std::unique_ptr<grpc::ClientContext> NewContext(bool deadline) const;

  std::string address_;
  std::string token_;
  std::unique_ptr<v1::JobService::Stub> stub_;
  ReconnectPolicy reconnect_;
};

}  // namespace ptq::client
