// `ptq quantize --workers N`: N processes on this machine quantize one job together. This process is
// rank 0 (it writes the checkpoint and evaluates); it starts ranks 1..N-1 by re-running its own
// command line with PTQ_WORKER_RANK / PTQ_WORKER_SIZE / PTQ_WORKER_STORE set, and the group meets
// through a Gloo FileStore in a private temporary folder (the service's workers meet through the
// coordinator instead). The result is the one-process checkpoint bit for bit.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "core/dist/collective.h"

namespace ptq::client {

// A running group as seen from this process: the collective, and (on rank 0) the children.
class LocalWorkerGroup {
 public:
  // On rank 0 (no PTQ_WORKER_RANK in the environment): creates the rendezvous folder and starts
  // workers - 1 copies of `argv`. In a started copy: joins as its rank.
  static absl::StatusOr<std::unique_ptr<LocalWorkerGroup>> Start(int workers, char** argv);
  ~LocalWorkerGroup();

  Collective& collective() { return *collective_; }
  int rank() const { return collective_->rank(); }
  // Rank 0: waits for the children; an error names a worker that failed or was killed.
  absl::Status Wait();
  // Rank 0 after a failure: stops the children still running.
  void KillChildren();

 private:
  LocalWorkerGroup() = default;
  std::unique_ptr<Collective> collective_;
  std::vector<int> children_;  // pids, rank 1..N-1
  std::string store_dir_;      // removed by rank 0
};

// The rank this process was started as by LocalWorkerGroup, if any.
std::optional<int> LocalWorkerRank();

}  // namespace ptq::client
