// ptq-worker: one worker of a PTQ Service cluster. Registers with the coordinator and quantizes its
// share of the jobs it is assigned (worker/worker_agent.h); serves /metrics; stops on SIGTERM/SIGINT
// (an attempt it was running fails over to the other workers).
#include <ATen/Parallel.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <iostream>
#include <thread>

#include "common/logging.h"
#include "common/metrics_server.h"
#include "common/malloc_reuse.h"
#include "common/passive_waiting.h"
#include "common/version.h"
#include "worker/worker_agent.h"

namespace {

std::atomic<bool> g_stop{false};

void OnStopSignal(int) { g_stop.store(true); }

}  // namespace

int main(int argc, char** argv) {
  ptq::PreferPassiveThreadWaiting(argv);
  ptq::KeepFreedMemoryForReuse();
  CLI::App app{"PTQ Service worker: quantizes the share of jobs a coordinator assigns it"};
  ptq::worker::WorkerAgentOptions options;
  std::string metrics_address;
  std::string log_level = "info";
  int threads = static_cast<int>(std::thread::hardware_concurrency());
  int64_t collective_timeout_s = options.collective_timeout.count() / 1000;
  app.add_option("--coordinator", options.coordinator, "the coordinator's gRPC address HOST:PORT")
      ->capture_default_str();
  app.add_option("--host", options.host,
                 "the address other workers reach this one at (its collective listens there)")
      ->capture_default_str();
  app.add_option("--device", options.device, "cpu, cuda or cuda:N (a CUDA build of LibTorch)")
      ->capture_default_str();
  app.add_option("--token", options.token, "bearer token with role worker (default: $PTQ_TOKEN)");
  app.add_option("--tls-ca", options.tls.ca_path, "PEM CA that signed the coordinator's certificate")
      ->envname("PTQ_TLS_CA");
  app.add_option("--tls-cert", options.tls.cert_path, "PEM client certificate (mutual TLS)")
      ->envname("PTQ_TLS_CERT");
  app.add_option("--tls-key", options.tls.key_path, "PEM private key of --tls-cert")
      ->envname("PTQ_TLS_KEY");
  app.add_flag("--insecure", options.tls.insecure, "plaintext gRPC to the coordinator (no TLS)")
      ->envname("PTQ_INSECURE");
  app.add_option("--metrics", metrics_address, "serve Prometheus metrics at http://HOST:PORT/metrics");
  app.add_option("--threads", threads, "CPU threads for tensor work (default: all cores)");
  app.add_option("--collective-timeout", collective_timeout_s,
                 "seconds a collective may wait for a peer before the attempt fails")
      ->capture_default_str();
  int64_t abort_grace_s = options.abort_grace.count() / 1000;
  app.add_option("--abort-grace", abort_grace_s,
                 "seconds an aborted attempt may stay blocked before the worker exits (code 75) for its "
                 "supervisor to restart it")
      ->capture_default_str();
  app.add_option("--log-level", log_level, "debug, info, warn or error")->capture_default_str();
  app.set_version_flag("--version", std::string(ptq::kVersion));
  CLI11_PARSE(app, argc, argv);
  ptq::InitLogging(log_level);
  if (options.token.empty()) {
    if (const char* t = std::getenv("PTQ_TOKEN")) options.token = t;
  }
  options.collective_timeout = std::chrono::seconds(std::max<int64_t>(collective_timeout_s, 1));
  options.abort_grace = std::chrono::seconds(std::max<int64_t>(abort_grace_s, 1));
  at::set_num_threads(std::max(1, threads));  // libtorch starts with 1 thread in C++

  struct sigaction action = {};
  action.sa_handler = OnStopSignal;
  sigemptyset(&action.sa_mask);
  ::sigaction(SIGTERM, &action, nullptr);
  ::sigaction(SIGINT, &action, nullptr);

  std::unique_ptr<ptq::metrics::MetricsServer> metrics_server;
  if (!metrics_address.empty()) {
    auto server = ptq::metrics::MetricsServer::Start(metrics_address, ptq::metrics::GlobalRegistry());
    if (!server.ok()) {
      std::cerr << "ptq-worker: error: " << server.status().message() << "\n";
      return 2;
    }
    metrics_server = *std::move(server);
  }
  absl::Status status = ptq::worker::RunWorkerAgent(options, g_stop);
  if (!status.ok()) {
    std::cerr << "ptq-worker: error: " << status.message() << "\n";
    return 1;
  }
  spdlog::info("worker stopped");
  return 0;
}
