// The gRPC JobService: validates requests, delegates to the JobScheduler and converts statuses.
// Thread safety: gRPC calls the methods concurrently; all state is in the scheduler.
#pragma once

#include <string>
#include <vector>

#include "common/access_tokens.h"
#include "ptq/v1/job_service.grpc.pb.h"
#include "server/job_scheduler.h"

namespace ptq::server {

// The one place where absl::Status becomes grpc::Status (same code, same message).
grpc::Status ToGrpcStatus(const absl::Status& status);

// The role of the token a call carries (its `authorization` metadata); UNAUTHENTICATED without a
// valid one.
absl::StatusOr<AccessRole> CallerRole(const AccessTokens& tokens, const grpc::ServerContext& context);

class JobServiceImpl final : public v1::JobService::Service {
 public:
  // REQUIRES: `scheduler` outlives the service.
  // `allowed_roots`: where jobs may read and write (empty: anywhere; see common/path_confinement.h).
  // `tokens`: bearer tokens every call must carry (nullptr: none required). REQUIRES: outlives the
  // service.
  // `max_queued_per_client`: queued jobs one client (token, or peer address without tokens) may have
  // (0: no limit).
  explicit JobServiceImpl(JobScheduler& scheduler, std::vector<std::string> allowed_roots = {},
                          const AccessTokens* tokens = nullptr, int max_queued_per_client = 0)
      : scheduler_(scheduler),
        allowed_roots_(std::move(allowed_roots)),
        tokens_(tokens),
        max_queued_per_client_(max_queued_per_client) {}

  grpc::Status Submit(grpc::ServerContext* context, const v1::SubmitRequest* request,
                      v1::Job* response) override;
  grpc::Status Get(grpc::ServerContext* context, const v1::GetJobRequest* request,
                   v1::Job* response) override;
  grpc::Status List(grpc::ServerContext* context, const v1::ListJobsRequest* request,
                    v1::ListJobsResponse* response) override;
  grpc::Status Cancel(grpc::ServerContext* context, const v1::CancelJobRequest* request,
                      v1::Job* response) override;
  grpc::Status Watch(grpc::ServerContext* context, const v1::WatchJobRequest* request,
                     grpc::ServerWriter<v1::JobEvent>* writer) override;
  grpc::Status Logs(grpc::ServerContext* context, const v1::LogsRequest* request,
                    grpc::ServerWriter<v1::LogLine>* writer) override;

 private:
  // UNAUTHENTICATED / PERMISSION_DENIED unless the call's token allows it (write: submit, cancel).
  grpc::Status Authorize(const grpc::ServerContext* context, bool write) const;

  JobScheduler& scheduler_;
  const std::vector<std::string> allowed_roots_;
  const AccessTokens* tokens_;
  const int max_queued_per_client_;
};

}  // namespace ptq::server
