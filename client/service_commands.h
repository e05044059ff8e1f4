// The `ptq` commands that talk to a coordinator: submit, watch, status, list, cancel and logs. Each
// takes --coordinator HOST:PORT (or $PTQ_COORDINATOR) and --json, prints errors as one line
// ("ptq: error: ...") and exits non-zero on them.
//
// watch, logs and status keep retrying a coordinator that cannot be reached for --reconnect-for
// seconds (a line on stderr for each retry), and watch and logs go on where their stream broke.
//
// Exit codes: 0 success; 1 an error (or, for watch, a FAILED job); 3 watch saw the job CANCELLED.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "client/quantize_flags.h"
#include "common/tls_credentials.h"

namespace ptq::client {

class JobClient;

class ServiceCommands {
 public:
  // Registers the commands on `app`. REQUIRES: this object outlives the parse of `app`.
  explicit ServiceCommands(CLI::App& app);
  ServiceCommands(const ServiceCommands&) = delete;
  ServiceCommands& operator=(const ServiceCommands&) = delete;

  // After parsing: runs the chosen command and returns its exit code, or nullopt when none of these
  // commands was chosen.
  std::optional<int> RunSelected();

 private:
  int Submit();
  int Watch();
  int Status();
  int List();
  int Cancel();
  int Logs();
  // A client for --coordinator with the token, transport security and reconnect flags; `notify`
  // shows a reconnect line (default: on stderr).
  absl::StatusOr<std::unique_ptr<JobClient>> Client(
      std::function<void(const std::string&)> notify = nullptr) const;

  std::string coordinator_ = "127.0.0.1:50051";
  std::string token_;
  TlsOptions tls_;
  bool json_ = false;
  double reconnect_seconds_ = 300;
  std::string job_id_;
  bool follow_ = false;
  QuantizeOptions submit_options_;
  CLI::App* submit_ = nullptr;
  CLI::App* watch_ = nullptr;
  CLI::App* status_ = nullptr;
  CLI::App* list_ = nullptr;
  CLI::App* cancel_ = nullptr;
  CLI::App* logs_ = nullptr;
};

}  // namespace ptq::client
