#include "client/service_commands.h"

#include <google/protobuf/util/json_util.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/cli_error.h"
#include "client/job_client.h"
#include "proto/ptq/v1/job_state.h"
#include "worker/quantize_spec.h"

namespace ptq::client {
namespace {

constexpr int kExitCancelled = 3;

std::string Json(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  std::string out;
  if (!google::protobuf::util::MessageToJsonString(message, &out, options).ok()) return "{}";
  return out;
}

using v1::IsFinished;
using v1::StateName;

std::string LocalTime(int64_t time_ms) {
  const std::time_t seconds = static_cast<std::time_t>(time_ms / 1000);
  std::tm tm;
  localtime_r(&seconds, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

std::string Describe(const v1::JobSpec& s) {
  const QuantizeOptions o = worker::QuantizeOptionsFromSpec(s);  // unset fields: the defaults
  return absl::StrFormat("%s W%d g%d", o.method, o.gptq.grid.bits, o.gptq.group_size);
}

std::string ProgressText(const v1::Job& job) {
  if (job.layers_total() == 0) return "-";
  return absl::StrFormat("block %d/%d, %d/%d layers", job.blocks_done(), job.num_blocks(),
                         job.layers_done(), job.layers_total());
}

void PrintResult(const v1::Job& job) {
  const v1::JobResult& r = job.result();
  if (r.has_perplexity_before()) std::printf("  perplexity before: %.4f\n", r.perplexity_before());
  if (r.has_perplexity_after()) std::printf("  perplexity after:  %.4f\n", r.perplexity_after());
  std::printf("  time: %.1f s\n", r.seconds());
  std::printf("  checkpoint: %s\n", r.checkpoint_path().c_str());
}

// The coordinator reads the paths on its own file system; send them absolute so that a relative
// path means what it means where `ptq submit` runs (the usual case: same machine or shared storage).
std::string Absolute(const std::string& path) {
  if (path.empty()) return path;
  std::error_code ec;
  auto p = std::filesystem::absolute(path, ec);
  return ec ? path : p.lexically_normal().string();
}

}  // namespace

absl::StatusOr<std::unique_ptr<JobClient>> ServiceCommands::Client(
    std::function<void(const std::string&)> notify) const {
  auto credentials = ChannelCredentialsFor(tls_);
  if (!credentials.ok()) return credentials.status();
  auto client = std::make_unique<JobClient>(coordinator_, token_, *credentials);
  ReconnectPolicy reconnect;
  reconnect.give_up_after = std::chrono::milliseconds(
      static_cast<int64_t>(std::max(0.0, reconnect_seconds_) * 1000));
  reconnect.notify = notify != nullptr ? std::move(notify) : [](const std::string& line) {
    std::fprintf(stderr, "%s\n", line.c_str());
  };
  client->set_reconnect(std::move(reconnect));
  return client;
}

ServiceCommands::ServiceCommands(CLI::App& app) {
  auto add_common = [this](CLI::App* command) {
    command->add_option("--coordinator", coordinator_, "coordinator address HOST:PORT")
        ->envname("PTQ_COORDINATOR")
        ->capture_default_str();
    command->add_option("--token", token_, "bearer token for the coordinator")
        ->envname("PTQ_TOKEN");
    command->add_flag("--json", json_, "print JSON (one object per line)");
    command->add_option("--tls-ca", tls_.ca_path, "PEM CA that signed the coordinator's certificate "
                        "(default: the system's roots)")->envname("PTQ_TLS_CA");
    command->add_option("--tls-cert", tls_.cert_path, "PEM client certificate (mutual TLS)")
        ->envname("PTQ_TLS_CERT");
    command->add_option("--tls-key", tls_.key_path, "PEM private key of --tls-cert")
        ->envname("PTQ_TLS_KEY");
    command->add_flag("--insecure", tls_.insecure, "plaintext gRPC (a coordinator run with --insecure)")
        ->envname("PTQ_INSECURE");
  };
  submit_ = app.add_subcommand("submit", "queue a quantization job on a coordinator; prints its id");
  AddQuantizeFlags(submit_, &submit_options_);
  add_common(submit_);

  auto add_reconnect = [this](CLI::App* command) {
    command->add_option("--reconnect-for", reconnect_seconds_,
                        "seconds to keep retrying an unreachable coordinator (0: fail at once)")
        ->envname("PTQ_RECONNECT_FOR")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
  };
  watch_ = app.add_subcommand("watch", "follow a job's progress until it finishes");
  watch_->add_option("job", job_id_, "job id")->required();
  add_common(watch_);
  add_reconnect(watch_);

  status_ = app.add_subcommand("status", "a job's state, progress and result");
  status_->add_option("job", job_id_, "job id")->required();
  add_common(status_);
  add_reconnect(status_);

  list_ = app.add_subcommand("list", "all jobs, oldest first");
  add_common(list_);

  cancel_ = app.add_subcommand("cancel", "cancel a queued or running job");
  cancel_->add_option("job", job_id_, "job id")->required();
  add_common(cancel_);

  logs_ = app.add_subcommand("logs", "a job's log");
  logs_->add_option("job", job_id_, "job id")->required();
  logs_->add_flag("-f,--follow", follow_, "keep printing new lines until the job finishes");
  add_common(logs_);
  add_reconnect(logs_);
}

std::optional<int> ServiceCommands::RunSelected() {
  if (*submit_) return Submit();
  if (*watch_) return Watch();
  if (*status_) return Status();
  if (*list_) return List();
  if (*cancel_) return Cancel();
  if (*logs_) return Logs();
  return std::nullopt;
}

int ServiceCommands::Submit() {
  // Settings of the process that runs a job, not of the job: a job does not carry them, so they
  // are refused by name rather than dropped.
  std::string local_flag;
  VisitQuantizeOptions(submit_options_, [&](const OptionField& f, const auto&) {
    if (local_flag.empty() && f.name.empty() && !f.flag.empty() &&
        submit_->count(std::string(f.flag)) > 0) {
      local_flag = f.flag;
    }
  });
  if (!local_flag.empty()) {
    return Fail(absl::InvalidArgumentError(absl::StrCat(
        local_flag, " is a setting of `ptq quantize`'s own process that a job does not carry "
                    "(the workers choose their device with `ptq-worker --device` and use the "
                    "defaults of the others); drop it from `ptq submit`")));
  }
  QuantizeOptions options = submit_options_;
  options.model_dir = Absolute(options.model_dir);
  options.calib_path = Absolute(options.calib_path);
  options.eval_path = Absolute(options.eval_path);
  options.out_dir = Absolute(options.out_dir);
  auto made = Client();
  if (!made.ok()) return Fail(made.status());
  JobClient& client = **made;
  auto job = client.Submit(worker::SpecFromQuantizeOptions(options));
  if (!job.ok()) return Fail(job.status());
  if (json_) {
    std::cout << Json(*job) << std::endl;
  } else {
    std::cout << job->id() << std::endl;
  }
  return 0;
}

int ServiceCommands::Watch() {
  const bool tty = !json_ && ::isatty(STDOUT_FILENO);
  bool progress_line_open = false;  // a tty line rewritten in place
  auto made = Client([&](const std::string& line) {
    if (progress_line_open) std::printf("\n");  // keep the progress line whole
    progress_line_open = false;
    std::fflush(stdout);
    std::fprintf(stderr, "%s\n", line.c_str());
  });
  if (!made.ok()) return Fail(made.status());
  JobClient& client = **made;
  auto progress = [&](const std::string& line) {
    if (tty) {
      std::printf("\r\033[K%s", line.c_str());
      progress_line_open = true;
    } else {
      std::printf("%s\n", line.c_str());
    }
    std::fflush(stdout);
  };
  std::optional<v1::Job> final_job;
  absl::Status status = client.Watch(job_id_, [&](const v1::JobEvent& e) {
    if (json_) {
      std::cout << Json(e) << std::endl;
      if (e.has_state() && IsFinished(e.state().state())) final_job = e.state();
      return;
    }
    if (e.has_layer()) {
      const v1::LayerProgress& p = e.layer();
      progress(absl::StrFormat(
          "block %d/%d  %s  loss %.4g (relative %.4g)  %d/%d layers  ETA %.1f s%s", p.block() + 1,
          p.num_blocks(), p.layer(), p.loss(), p.relative_loss(), p.layers_done(), p.layers_total(),
          p.eta_seconds(), p.reloaded() ? "  (reloaded: saved by an earlier run)" : ""));
    } else if (e.has_state()) {
      if (progress_line_open) std::printf("\n");
      progress_line_open = false;
      const v1::Job& job = e.state();
      if (IsFinished(job.state())) {
        final_job = job;
      } else {
        std::printf("job %s %s\n", job.id().c_str(), StateName(job.state()).c_str());
      }
      std::fflush(stdout);
    }
  });
  if (progress_line_open) std::printf("\n");
  if (!status.ok()) return Fail(status);
  if (!final_job.has_value()) {
    return Fail(absl::UnavailableError("the coordinator ended the stream before the job finished"));
  }
  const v1::Job& job = *final_job;
  switch (job.state()) {
    case v1::JOB_STATE_SUCCEEDED:
      if (!json_) {
        std::printf("job %s SUCCEEDED\n", job.id().c_str());
        PrintResult(job);
      }
      return 0;
    case v1::JOB_STATE_CANCELLED:
      if (!json_) std::fprintf(stderr, "ptq: job %s CANCELLED: %s\n", job.id().c_str(), job.error().c_str());
      return kExitCancelled;
    default:
      if (!json_) std::fprintf(stderr, "ptq: error: job %s FAILED: %s\n", job.id().c_str(), job.error().c_str());
      return kExitError;
  }
}

int ServiceCommands::Status() {
  auto made = Client();
  if (!made.ok()) return Fail(made.status());
  JobClient& client = **made;
  auto job = client.Get(job_id_);
  if (!job.ok()) return Fail(job.status());
  if (json_) {
    std::cout << Json(*job) << std::endl;
    return 0;
  }
  std::printf("job %s %s: %s\n", job->id().c_str(), StateName(job->state()).c_str(),
              Describe(job->spec()).c_str());
  std::printf("  model: %s\n  output: %s\n", job->spec().model_path().c_str(),
              job->spec().output_path().c_str());
  std::printf("  submitted: %s\n", LocalTime(job->create_time_ms()).c_str());
  if (job->start_time_ms() > 0) std::printf("  started: %s\n", LocalTime(job->start_time_ms()).c_str());
  if (job->end_time_ms() > 0) std::printf("  finished: %s\n", LocalTime(job->end_time_ms()).c_str());
  if (job->layers_total() > 0) std::printf("  progress: %s\n", ProgressText(*job).c_str());
  if (!job->error().empty()) std::printf("  error: %s\n", job->error().c_str());
  if (job->state() == v1::JOB_STATE_SUCCEEDED) PrintResult(*job);
  return 0;
}

int ServiceCommands::List() {
  auto made = Client();
  if (!made.ok()) return Fail(made.status());
  JobClient& client = **made;
  auto jobs = client.List();
  if (!jobs.ok()) return Fail(jobs.status());
  if (json_) {
    v1::ListJobsResponse response;
    for (const auto& job : *jobs) *response.add_jobs() = job;
    std::cout << Json(response) << std::endl;
    return 0;
  }
  std::printf("%-17s %-10s %-16s %-28s %s\n", "ID", "STATE", "METHOD", "PROGRESS", "OUTPUT");
  for (const auto& job : *jobs) {
    std::printf("%-17s %-10s %-16s %-28s %s\n", job.id().c_str(), StateName(job.state()).c_str(),
                Describe(job.spec()).c_str(), ProgressText(job).c_str(),
                job.spec().output_path().c_str());
  }
  return 0;
}

int ServiceCommands::Cancel() {
  auto made = Client();
  if (!made.ok()) return Fail(made.status());
  JobClient& client = **made;
  auto job = client.Cancel(job_id_);
  if (!job.ok()) return Fail(job.status());
  if (json_) {
    std::cout << Json(*job) << std::endl;
  } else if (job->state() == v1::JOB_STATE_CANCELLED) {
    std::printf("job %s CANCELLED\n", job->id().c_str());
  } else {
    std::printf("job %s: cancel requested; it stops at its next layer (ptq watch %s)\n",
                job->id().c_str(), job->id().c_str());
  }
  return 0;
}

int ServiceCommands::Logs() {
  auto made = Client([](const std::string& line) {
    std::fflush(stdout);
    std::fprintf(stderr, "%s\n", line.c_str());
  });
  if (!made.ok()) return Fail(made.status());
  JobClient& client = **made;
  absl::Status status = client.Logs(job_id_, follow_, [&](const v1::LogLine& line) {
    if (json_) {
      std::cout << Json(line) << std::endl;
    } else {
      std::printf("%s %s\n", LocalTime(line.time_ms()).c_str(), line.text().c_str());
      std::fflush(stdout);
    }
  });
  if (!status.ok()) return Fail(status);
  return 0;
}

}  // namespace ptq::client
