#include "server/remote_executor.h"

#include "absl/strings/str_cat.h"
#include "common/model_fingerprint.h"
#include "worker/quantize_spec.h"

namespace ptq::server {
namespace {

constexpr std::chrono::milliseconds kPoll(200);

bool Cancelled(const ExecutionHooks& hooks) {
  return hooks.cancel != nullptr && hooks.cancel->load();
}

void Log(const ExecutionHooks& hooks, const std::string& line) {
  if (hooks.log) hooks.log(line);
}

}  // namespace

absl::Status RemoteExecutor::Validate(const v1::JobSpec& spec) {
  return worker::ValidateQuantizeSpec(spec);
}

absl::StatusOr<v1::JobResult> RemoteExecutor::Run(const v1::JobSpec& spec,
                                                  const ExecutionHooks& hooks) {
  auto fingerprint = ModelFingerprint(spec.model_path());
  if (!fingerprint.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("model_path: ", fingerprint.status().message()));
  }
  absl::Status last_failure;
  for (int attempt_no = 1; attempt_no <= options_.max_attempts; ++attempt_no) {
    // The first group waits for the full size; a re-formed one takes whoever is live after a lease
    // (time for a replacement to register).
    std::vector<std::string> members;
    bool waiting_logged = false;
    while (members.empty()) {
      if (Cancelled(hooks)) return absl::CancelledError("cancelled while waiting for workers");
      const bool first = attempt_no == 1;
      members = registry_.WaitForIdleWorkers(options_.workers, first ? options_.workers : 1,
                                             first ? kPoll : registry_.lease());
      if (members.empty() && !waiting_logged) {
        Log(hooks, absl::StrCat("waiting for ", first ? options_.workers : 1, " idle worker(s); ",
                                registry_.LiveWorkers(), " registered"));
        waiting_logged = true;
      }
    }
    Log(hooks, absl::StrCat("attempt ", attempt_no, ": ", members.size(), " worker(s): ",
                            registry_.Describe(members)));
    const int64_t attempt = registry_.StartAttempt(hooks.job_id, spec, *fingerprint, members);

    AttemptUpdate update;
    bool aborted = false;
    while (true) {
      update = registry_.PollAttempt(attempt, kPoll);
      for (const auto& p : update.progress) {
        if (p.has_layer() && hooks.on_layer) hooks.on_layer(p.layer());
        if (p.has_block() && hooks.on_block) hooks.on_block(p.block());
      }
      if (update.result.has_value()) break;  // rank 0 wrote the checkpoint: done, whatever the rest
      if (update.outcomes == update.size) break;
      if ((update.failure.has_value() || Cancelled(hooks)) && !aborted) {
        // Stop the survivors and wait for each to report or be lost (bounded by the lease), so no
        // rank is still writing when the job moves on.
        registry_.AbortAttempt(attempt);
        aborted = true;
      }
    }
    registry_.FinishAttempt(attempt);
    if (update.result.has_value()) return *update.result;
    if (Cancelled(hooks)) return absl::CancelledError("cancelled; the workers stopped");
    if (!update.failure.has_value()) {
      return absl::InternalError("every rank finished but rank 0 sent no result");
    }
    last_failure = *update.failure;
    if (!update.transient) return last_failure;
    Log(hooks, absl::StrCat("attempt ", attempt_no, " failed: ", last_failure.message(),
                            attempt_no < options_.max_attempts ? "; re-forming the group" : ""));
  }
  return absl::UnavailableError(absl::StrCat("gave up after ", options_.max_attempts,
                                             " attempts; the last: ", last_failure.message()));
}

}  // namespace ptq::server
