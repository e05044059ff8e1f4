#include "server/worker_service.h"

#include <algorithm>

#include "server/job_service.h"

namespace ptq::server {
namespace {

// Long polls are capped so a call never outlives a few leases (and shutdown's grace period).
constexpr int64_t kMaxWaitMs = 5000;

std::chrono::milliseconds CappedWait(int64_t wait_ms) {
  return std::chrono::milliseconds(std::clamp<int64_t>(wait_ms, 0, kMaxWaitMs));
}

}  // namespace

grpc::Status WorkerServiceImpl::Authorize(const grpc::ServerContext& context) const {
  if (require_client_certificate_ &&
      (context.auth_context() == nullptr || !context.auth_context()->IsPeerAuthenticated())) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "workers must present a TLS client certificate signed by the coordinator's "
                        "client CA (ptq-worker --tls-cert/--tls-key)");
  }
  if (tokens_ == nullptr) return grpc::Status::OK;
  auto role = CallerRole(*tokens_, context);
  if (!role.ok()) return ToGrpcStatus(role.status());
  return ToGrpcStatus(AccessTokens::AuthorizeWorker(*role));
}

grpc::Status WorkerServiceImpl::Register(grpc::ServerContext* context,
                                         const v1::RegisterWorkerRequest* request,
                                         v1::RegisterWorkerResponse* response) {
  if (auto a = Authorize(*context); !a.ok()) return a;
  auto r = registry_.Register(*request);
  if (!r.ok()) return ToGrpcStatus(r.status());
  *response = *std::move(r);
  return grpc::Status::OK;
}

grpc::Status WorkerServiceImpl::Heartbeat(grpc::ServerContext* context,
                                          const v1::HeartbeatRequest* request,
                                          v1::HeartbeatResponse* response) {
  if (auto a = Authorize(*context); !a.ok()) return a;
  auto r = registry_.Heartbeat(request->worker_id());
  if (!r.ok()) return ToGrpcStatus(r.status());
  *response = *std::move(r);
  return grpc::Status::OK;
}

grpc::Status WorkerServiceImpl::GetAssignment(grpc::ServerContext* context,
                                              const v1::GetAssignmentRequest* request,
                                              v1::GetAssignmentResponse* response) {
  if (auto a = Authorize(*context); !a.ok()) return a;
  auto r = registry_.WaitAssignment(request->worker_id(), CappedWait(request->wait_ms()));
  if (!r.ok()) return ToGrpcStatus(r.status());
  *response = *std::move(r);
  return grpc::Status::OK;
}

grpc::Status WorkerServiceImpl::ReportProgress(grpc::ServerContext* context,
                                               const v1::ReportProgressRequest* request,
                                               v1::ReportProgressResponse* response) {
  if (auto a = Authorize(*context); !a.ok()) return a;
  auto r = registry_.ReportProgress(*request);
  if (!r.ok()) return ToGrpcStatus(r.status());
  *response = *std::move(r);
  return grpc::Status::OK;
}

grpc::Status WorkerServiceImpl::ReportResult(grpc::ServerContext* context,
                                             const v1::ReportResultRequest* request,
                                             v1::ReportResultResponse*) {
  if (auto a = Authorize(*context); !a.ok()) return a;
  return ToGrpcStatus(registry_.ReportResult(*request));
}

grpc::Status WorkerServiceImpl::StoreSet(grpc::ServerContext* context,
                                         const v1::StoreSetRequest* request, v1::StoreSetResponse*) {
  if (auto a = Authorize(*context); !a.ok()) return a;
  return ToGrpcStatus(registry_.StoreSet(request->worker_id(), request->key(), request->value()));
}

grpc::Status WorkerServiceImpl::StoreGet(grpc::ServerContext* context,
                                         const v1::StoreGetRequest* request,
                                         v1::StoreGetResponse* response) {
  if (auto a = Authorize(*context); !a.ok()) return a;
  std::vector<std::string> keys(request->keys().begin(), request->keys().end());
  auto r = registry_.StoreGet(request->worker_id(), keys, CappedWait(request->wait_ms()));
  if (!r.ok()) return ToGrpcStatus(r.status());
  for (std::string& v : *r) response->add_values(std::move(v));
  return grpc::Status::OK;
}

}  // namespace ptq::server
