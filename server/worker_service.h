// The gRPC WorkerService (proto/ptq/v1/worker_service.proto): checks the caller's token (role worker
// or admin) and the request's sizes, and delegates to the WorkerRegistry.
#pragma once

#include "common/access_tokens.h"
#include "ptq/v1/worker_service.grpc.pb.h"
#include "server/worker_registry.h"

namespace ptq::server {

class WorkerServiceImpl final : public v1::WorkerService::Service {
 public:
  // REQUIRES: `registry` and `tokens` (nullptr: no token required) outlive the service.
  // `require_client_certificate`: refuse callers without a verified TLS client certificate (the
  // coordinator runs mutual TLS for its workers).
  WorkerServiceImpl(WorkerRegistry& registry, const AccessTokens* tokens,
                    bool require_client_certificate = false)
      : registry_(registry), tokens_(tokens), require_client_certificate_(require_client_certificate) {}

  grpc::Status Register(grpc::ServerContext* context, const v1::RegisterWorkerRequest* request,
                        v1::RegisterWorkerResponse* response) override;
  grpc::Status Heartbeat(grpc::ServerContext* context, const v1::HeartbeatRequest* request,
                         v1::HeartbeatResponse* response) override;
  grpc::Status GetAssignment(grpc::ServerContext* context, const v1::GetAssignmentRequest* request,
                             v1::GetAssignmentResponse* response) override;
  grpc::Status ReportProgress(grpc::ServerContext* context, const v1::ReportProgressRequest* request,
                              v1::ReportProgressResponse* response) override;
  grpc::Status ReportResult(grpc::ServerContext* context, const v1::ReportResultRequest* request,
                            v1::ReportResultResponse* response) override;
  grpc::Status StoreSet(grpc::ServerContext* context, const v1::StoreSetRequest* request,
                        v1::StoreSetResponse* response) override;
  grpc::Status StoreGet(grpc::ServerContext* context, const v1::StoreGetRequest* request,
                        v1::StoreGetResponse* response) override;

 private:
  grpc::Status Authorize(const grpc::ServerContext& context) const;

  WorkerRegistry& registry_;
  const AccessTokens* tokens_;
  const bool require_client_certificate_;
};

}  // namespace ptq::server
