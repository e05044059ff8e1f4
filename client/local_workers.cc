#include "client/local_workers.h"

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

#ifdef PTQ_HAVE_GLOO
#include <gloo/rendezvous/file_store.h>

#include "worker/gloo_collective.h"
#endif

extern char** environ;

namespace ptq::client {

std::optional<int> LocalWorkerRank() {
  const char* rank = std::getenv("PTQ_WORKER_RANK");
  int r = 0;
  if (rank == nullptr || !absl::SimpleAtoi(rank, &r)) return std::nullopt;
  return r;
}

absl::StatusOr<std::unique_ptr<LocalWorkerGroup>> LocalWorkerGroup::Start(int workers, char** argv) {
#ifndef PTQ_HAVE_GLOO
  (void)argv;
  return absl::UnimplementedError(absl::StrCat(
      "--workers ", workers, " needs the Gloo collective, which this build lacks (libgloo-dev)"));
#else
  if (workers < 1) return absl::InvalidArgumentError("--workers must be at least 1");
  std::unique_ptr<LocalWorkerGroup> group(new LocalWorkerGroup());
  std::optional<int> rank = LocalWorkerRank();
  std::string store;
  if (rank.has_value()) {
    const char* dir = std::getenv("PTQ_WORKER_STORE");
    if (dir == nullptr) return absl::InvalidArgumentError("PTQ_WORKER_STORE is not set");
    store = dir;
  } else {
    rank = 0;
    char tmpl[] = "/tmp/ptq-workers-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) {
      return absl::InternalError("cannot create a rendezvous folder under /tmp");
    }
    store = tmpl;
    group->store_dir_ = store;
    for (int r = 1; r < workers; ++r) {
      std::vector<std::string> env_strings;
      for (char** e = environ; *e != nullptr; ++e) env_strings.push_back(*e);
      env_strings.push_back(absl::StrCat("PTQ_WORKER_RANK=", r));
      env_strings.push_back(absl::StrCat("PTQ_WORKER_SIZE=", workers));
      env_strings.push_back(absl::StrCat("PTQ_WORKER_STORE=", store));
      std::vector<char*> envp;
      for (auto& s : env_strings) envp.push_back(s.data());
      envp.push_back(nullptr);
      pid_t pid = 0;
      if (posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv, envp.data()) != 0) {
        group->KillChildren();
        return absl::InternalError(absl::StrCat("cannot start worker ", r));
      }
      group->children_.push_back(pid);
    }
  }
  gloo::rendezvous::FileStore file_store(store);
  auto collective = worker::ConnectGloo(file_store, *rank, workers);
  if (!collective.ok()) {
    group->KillChildren();
    return collective.status();
  }
  group->collective_ = std::move(*collective);
  return group;
#endif
}

absl::Status LocalWorkerGroup::Wait() {
  absl::Status status;
  for (size_t i = 0; i < children_.size(); ++i) {
    int wstatus = 0;
    if (waitpid(children_[i], &wstatus, 0) < 0) continue;
    const int rank = static_cast<int>(i) + 1;
    if (WIFSIGNALED(wstatus) && status.ok()) {
      status = absl::UnavailableError(
          absl::StrCat("worker ", rank, " was killed by signal ", WTERMSIG(wstatus)));
    } else if (WIFEXITED(wstatus) && WEXITSTATUS(wstatus) != 0 && status.ok()) {
      status = absl::UnavailableError(
          absl::StrCat("worker ", rank, " failed (exit code ", WEXITSTATUS(wstatus), ")"));
    }
    children_[i] = -1;
  }
  return status;
}

void LocalWorkerGroup::KillChildren() {
  for (int& pid : children_) {
    if (pid > 0) {
      kill(pid, SIGTERM);
      waitpid(pid, nullptr, 0);
      pid = -1;
    }
  }
}

LocalWorkerGroup::~LocalWorkerGroup() {
  KillChildren();
  if (!store_dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(store_dir_, ec);
  }
}

}  // namespace ptq::client
