// Collective over NCCL (from the CUDA toolkit) for GPU workers: the ranks of a group each own one
// CUDA device. Tensors on that device are reduced in place on the group's stream; CPU tensors (the
// pipeline's statistics today) are staged through one device buffer, so the same calls work with
// either. Built only when CUDA and NCCL are found (PTQ_HAVE_NCCL).
//
// Ranks meet through a key-value exchange rather than Gloo's store type (GPU builds use PyTorch's
// libtorch, where Debian's Gloo is left out): rank 0 creates NCCL's unique id and sets it under a
// key, the others get it - the coordinator's StoreSet/StoreGet serve it in the service.
//
// Failure: the communicator is non-blocking; every wait is bounded by `timeout`, after which (or on
// an asynchronous NCCL error, such as a peer that died) the communicator is aborted and the call
// returns UNAVAILABLE, as the Gloo backend does.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/dist/collective.h"

namespace ptq {

struct NcclRendezvous {
  std::function<absl::Status(const std::string& key, const std::string& value)> set;
  // Blocks until the key is set or the timeout passes.
  std::function<absl::StatusOr<std::string>(const std::string& key, std::chrono::milliseconds timeout)> get;
};

struct NcclOptions {
  int cuda_device = 0;
  std::chrono::milliseconds timeout{std::chrono::minutes(10)};  // rendezvous and each collective
};

// Joins rank `rank` of `size` (every rank calls it with a rendezvous that reaches the same keys).
absl::StatusOr<std::unique_ptr<Collective>> ConnectNccl(const NcclRendezvous& rendezvous, int rank,
                                                        int size, const NcclOptions& options = {});

}  // namespace ptq
