// The coordinator process minus its flags: job store, executor (embedded worker, or remote workers
// behind WorkerService), scheduler and the gRPC server (JobService, WorkerService when remote, the
// standard health service, server reflection). RAII: serving from a successful
// Start until Shutdown or destruction.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/metrics.h"
#include "common/tls_credentials.h"

namespace grpc {
class Server;
}  // namespace grpc

namespace ptq {
class AccessTokens;
}

namespace ptq::server {

class JobExecutor;
class JobScheduler;
class JobServiceImpl;
class JobStore;
class WorkerRegistry;
class WorkerServiceImpl;

struct CoordinatorOptions {
  std::string listen_address = "127.0.0.1:50051";  // HOST:PORT; port 0 picks a free one
  std::string store_path = "ptq-jobs.db";          // SQLite file, created if absent
  // Folders jobs may read models and texts from and write checkpoints to (empty: anywhere).
  std::vector<std::string> allowed_roots;
  // Token file (common/access_tokens.h); empty: the API needs no token.
  std::string tokens_path;
  // Queued jobs one client may have (0: no limit); RESOURCE_EXHAUSTED beyond.
  int max_queued_per_client = 16;
  // Largest request the server accepts (a JobSpec is a few hundred bytes).
  int max_request_bytes = 1 << 20;
  // 0: jobs run in this process (the embedded worker). N > 0: jobs run on groups of N remote
  // `ptq-worker`s, which register through WorkerService (server/remote_executor.h).
  int workers = 0;
  std::chrono::milliseconds worker_lease{std::chrono::seconds(5)};
  // Transport security (common/tls_credentials.h). Plaintext by default for embedding and tests; the
  // ptq-coordinator binary makes its users choose TLS or --insecure. With tls.ca_path, workers must
  // present a client certificate signed by that CA (mutual TLS).
  TlsOptions tls{.insecure = true};
};

class Coordinator {
 public:
  // REQUIRES: `registry` outlives the coordinator.
  static absl::StatusOr<std::unique_ptr<Coordinator>> Start(const CoordinatorOptions& options,
                                                            metrics::Registry& registry);
  ~Coordinator();
  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  // The port the server listens on.
  int port() const { return port_; }
  // Graceful stop: health turns NOT_SERVING, new jobs are refused, the running job is interrupted
  // (back to QUEUED for the next start), open Watch streams end, then in-flight calls get a few
  // seconds to finish. Idempotent; safe from any thread (not from a signal handler).
  void Shutdown();
  // Blocks until Shutdown has stopped the server.
  void Wait();

 private:
  Coordinator();

  std::unique_ptr<JobStore> store_;
  std::unique_ptr<WorkerRegistry> workers_;
  std::unique_ptr<JobExecutor> executor_;
  std::unique_ptr<JobScheduler> scheduler_;
  std::unique_ptr<AccessTokens> tokens_;
  std::unique_ptr<JobServiceImpl> service_;
  std::unique_ptr<WorkerServiceImpl> worker_service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::atomic<bool> shut_down_{false};
};

}  // namespace ptq::server
