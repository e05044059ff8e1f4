#include "server/coordinator.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <spdlog/spdlog.h>

#include <chrono>

#include "absl/strings/str_cat.h"
#include "server/embedded_worker.h"
#include "server/job_scheduler.h"
#include "server/job_service.h"
#include "server/remote_executor.h"
#include "server/sqlite_job_store.h"
#include "server/worker_registry.h"
#include "server/worker_service.h"

namespace ptq::server {
namespace {

// How long in-flight calls may take to finish once shutdown starts.
constexpr std::chrono::seconds kShutdownGrace(5);

}  // namespace

Coordinator::Coordinator() = default;

absl::StatusOr<std::unique_ptr<Coordinator>> Coordinator::Start(const CoordinatorOptions& options,
                                                                metrics::Registry& registry) {
  std::unique_ptr<Coordinator> c(new Coordinator());
  auto store = SqliteJobStore::Open(options.store_path);
  if (!store.ok()) return store.status();
  c->store_ = *std::move(store);
  if (options.workers > 0) {
    WorkerRegistryOptions worker_options;
    worker_options.lease = options.worker_lease;
    c->workers_ = std::make_unique<WorkerRegistry>(worker_options, registry);
    c->executor_ = std::make_unique<RemoteExecutor>(
        *c->workers_, RemoteExecutorOptions{.workers = options.workers});
  } else {
    c->executor_ = std::make_unique<EmbeddedWorker>();
  }
  c->scheduler_ = std::make_unique<JobScheduler>(*c->store_, *c->executor_, registry);
  if (!options.tokens_path.empty()) {
    auto tokens = AccessTokens::Load(options.tokens_path);
    if (!tokens.ok()) return tokens.status();
    c->tokens_ = std::make_unique<AccessTokens>(*std::move(tokens));
  }
  c->service_ = std::make_unique<JobServiceImpl>(*c->scheduler_, options.allowed_roots,
                                                 c->tokens_.get(), options.max_queued_per_client);
  if (c->workers_ != nullptr) {
    c->worker_service_ = std::make_unique<WorkerServiceImpl>(
        *c->workers_, c->tokens_.get(),
        /*require_client_certificate=*/!options.tls.insecure && !options.tls.ca_path.empty());
  }

  // Both are process-wide switches that apply to servers built afterwards.
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  auto credentials = ServerCredentialsFor(options.tls);
  if (!credentials.ok()) return credentials.status();
  builder.AddListeningPort(options.listen_address, *credentials, &c->port_);
  builder.SetMaxReceiveMessageSize(options.max_request_bytes);
  builder.RegisterService(c->service_.get());
  if (c->worker_service_ != nullptr) builder.RegisterService(c->worker_service_.get());
  c->server_ = builder.BuildAndStart();
  if (c->server_ == nullptr || c->port_ == 0) {
    c->server_.reset();
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options.listen_address));
  }
  if (auto s = c->scheduler_->Start(); !s.ok()) {
    c->Shutdown();
    return s;
  }
  c->server_->GetHealthCheckService()->SetServingStatus(true);
  spdlog::info("coordinator listening on port {}, jobs in {}, {}", c->port_, options.store_path,
               options.workers > 0 ? absl::StrCat("groups of ", options.workers, " remote workers")
                                   : std::string("embedded worker"));
  return c;
}

Coordinator::~Coordinator() { Shutdown(); }

void Coordinator::Shutdown() {
  if (shut_down_.exchange(true)) return;
  if (server_ != nullptr) server_->GetHealthCheckService()->SetServingStatus(false);
  // The scheduler first: it ends the Watch streams, which the server would otherwise wait for.
  if (scheduler_ != nullptr) scheduler_->Stop();
  if (server_ != nullptr) server_->Shutdown(std::chrono::system_clock::now() + kShutdownGrace);
}

void Coordinator::Wait() {
  if (server_ != nullptr) server_->Wait();
}

}  // namespace ptq::server
