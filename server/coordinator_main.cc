// ptq-coordinator: serves the JobService (with health and reflection) and /metrics, runs the jobs
// with its embedded worker or (--workers N) on remote ptq-workers, and stops gracefully on SIGTERM or SIGINT.
#include <ATen/Parallel.h>
#include <signal.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <thread>
#include <unistd.h>

#include "common/malloc_reuse.h"
#include "common/passive_waiting.h"
#include "common/logging.h"
#include "common/metrics_server.h"
#include "server/coordinator.h"

// The write end is used by the signal handler, which can reach nothing else.
int g_stop_pipe[2] = {-1, -1};

void OnStopSignal(int signal) {
  const char byte = static_cast<char>(signal);
  [[maybe_unused]] ssize_t n = ::write(g_stop_pipe[1], &byte, 1);
}

int main(int argc, char** argv) {
  ptq::PreferPassiveThreadWaiting(argv);
  ptq::KeepFreedMemoryForReuse();
  // SIGTERM and SIGINT: the handler only writes a byte to a pipe (async-signal-safe), and a thread
  // reading it shuts down. Not sigwait with blocked signals: threads that libraries start before
  // main (OpenBLAS) would not block them and take the default action, killing the process.
  if (::pipe(g_stop_pipe) != 0) {
    std::perror("ptq-coordinator: pipe");
    return 1;
  }
  struct sigaction action = {};
  action.sa_handler = OnStopSignal;
  sigemptyset(&action.sa_mask);
  ::sigaction(SIGTERM, &action, nullptr);
  ::sigaction(SIGINT, &action, nullptr);

  CLI::App app{"PTQ Service coordinator: queues quantization jobs and runs them"};
  ptq::server::CoordinatorOptions options;
  std::string metrics_address;
  std::string log_level = "info";
  int threads = static_cast<int>(std::thread::hardware_concurrency());
  app.add_option("--listen", options.listen_address, "gRPC address HOST:PORT")->capture_default_str();
  app.add_option("--store", options.store_path, "SQLite job store file")->capture_default_str();
  app.add_option("--tokens", options.tokens_path,
                 "bearer-token file, lines `TOKEN admin|read` (default: no token required)");
  app.add_option("--allow-root", options.allowed_roots,
                 "a folder jobs may read from and write to (repeat for several; default: anywhere)");
  int64_t lease_ms = options.worker_lease.count();
  app.add_option("--workers", options.workers,
                 "run jobs on groups of N remote ptq-workers (default 0: in this process)");
  app.add_option("--worker-lease-ms", lease_ms, "a worker silent this long is lost")
      ->capture_default_str();
  options.tls.insecure = false;  // the binary's users choose: TLS, or --insecure
  app.add_option("--tls-cert", options.tls.cert_path, "PEM server certificate (chain) for TLS");
  app.add_option("--tls-key", options.tls.key_path, "PEM private key of --tls-cert");
  app.add_option("--tls-client-ca", options.tls.ca_path,
                 "PEM CA: workers must present a client certificate it signed (mutual TLS)");
  app.add_flag("--insecure", options.tls.insecure, "serve plaintext gRPC (no TLS)");
  app.add_option("--max-queued-per-client", options.max_queued_per_client,
                 "queued jobs one client (token or address) may have; 0: no limit")
      ->capture_default_str();
  app.add_option("--metrics", metrics_address, "serve Prometheus metrics at http://HOST:PORT/metrics");
  app.add_option("--threads", threads, "CPU threads for tensor work (default: all cores)");
  app.add_option("--log-level", log_level, "debug, info, warn or error")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  options.worker_lease = std::chrono::milliseconds(std::max<int64_t>(lease_ms, 200));
  ptq::InitLogging(log_level);
  at::set_num_threads(std::max(1, threads));  // libtorch starts with 1 thread in C++

  std::unique_ptr<ptq::metrics::MetricsServer> metrics_server;
  if (!metrics_address.empty()) {
    auto server = ptq::metrics::MetricsServer::Start(metrics_address, ptq::metrics::GlobalRegistry());
    if (!server.ok()) {
      std::cerr << "ptq-coordinator: error: " << server.status().message() << "\n";
      return 2;
    }
    metrics_server = *std::move(server);
  }
  auto coordinator = ptq::server::Coordinator::Start(options, ptq::metrics::GlobalRegistry());
  if (!coordinator.ok()) {
    std::cerr << "ptq-coordinator: error: " << coordinator.status().message() << "\n";
    return 1;
  }
  std::thread signal_waiter([c = coordinator->get()] {
    char signal = 0;
    while (::read(g_stop_pipe[0], &signal, 1) < 0 && errno == EINTR) {
    }
    spdlog::info("signal {}: shutting down", static_cast<int>(signal));
    c->Shutdown();
  });
  (*coordinator)->Wait();
  signal_waiter.join();
  spdlog::info("coordinator stopped");
  return 0;
}
