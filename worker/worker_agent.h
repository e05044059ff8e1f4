// What `ptq-worker` does: registers with the coordinator (WorkerService), keeps its lease alive from a
// heartbeat thread, and runs the assignments it is given: one rank of one attempt of a job, joined to
// the attempt's other ranks by a Gloo group that meets through the coordinator's rendezvous store.
// Rank 0 reports progress and writes the checkpoint. An attempt the coordinator aborts (cancelled job,
// lost peer) stops at the next layer; a coordinator that forgot the worker (restarted) makes it stop
// its attempt and register again.
#pragma once

#include <atomic>
#include <chrono>
#include <string>

#include "absl/status/status.h"
#include "common/tls_credentials.h"

namespace ptq::worker {

struct WorkerAgentOptions {
  std::string coordinator = "127.0.0.1:50051";  // HOST:PORT
  std::string host = "127.0.0.1";  // the address the other workers reach this one's collective at
  std::string device = "cpu";
  std::string token;               // bearer token with role worker (empty: none)
  std::chrono::milliseconds collective_timeout{std::chrono::minutes(10)};
  // An aborted attempt still running after this long (blocked in a collective) makes the worker
  // exit with code 75 for its supervisor to restart it.
  std::chrono::milliseconds abort_grace{std::chrono::seconds(60)};
  // How to reach the coordinator: TLS verifying it against tls.ca_path (empty: system roots),
  // presenting tls.cert_path/key_path for mutual TLS; or plaintext with tls.insecure.
  TlsOptions tls;
};

// Serves assignments until `stop` is set. Returns an error when the coordinator refuses the worker
// (another version, another model view) or the options are unusable.
absl::Status RunWorkerAgent(const WorkerAgentOptions& options, const std::atomic<bool>& stop);

}  // namespace ptq::worker
