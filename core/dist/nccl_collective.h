// Collective over NCCL (from the CUDA toolkit or PyTorch's package) for GPU workers: the ranks of a
// group each own one CUDA device. Tensors on that device are reduced in place; CPU tensors (the
// pipeline's statistics today) are staged through one device buffer, so the same calls work with
// either. Built only when CUDA and NCCL are found (PTQ_HAVE_NCCL).
//
// Ranks meet through a key-value exchange rather than Gloo's store type (GPU builds use PyTorch's
// libtorch, where Debian's Gloo is left out): rank 0 creates NCCL's unique id and sets it under a
// key scoped by the attempt (NcclOptions::key_prefix), the others get it - the coordinator's
// StoreSet/StoreGet serve it in the service.
//
// Streams: collectives run on the group's own stream. With a libtorch that has CUDA
// (PTQ_TORCH_CUDA) that stream first waits for ATen's current stream of the device (so data an ATen
// op is still producing is complete), and the tensors it touched are recorded with ATen's caching
// allocator for it (so their memory is not reused while NCCL may still use it). Every call returns
// only after its work finished, so results can be used on any stream.
//
// Failure: the communicator is non-blocking. Every call waits, up to `timeout` in all, first until
// the communicator reports it is no longer in progress (ncclInProgress is never taken as done), then
// until the stream finishes; an asynchronous NCCL error (a peer that died) or the timeout aborts the
// communicator and the call returns UNAVAILABLE, as the Gloo backend does. Later calls then fail at
// once.
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
  // Blocks until the key is set or the timeout passes (then DeadlineExceeded or NotFound); a zero
  // timeout asks whether the key is set now.
  std::function<absl::StatusOr<std::string>(const std::string& key, std::chrono::milliseconds timeout)> get;
};

struct NcclOptions {
  int cuda_device = 0;
  std::chrono::milliseconds timeout{std::chrono::minutes(10)};  // rendezvous and each collective
  // Required: scopes the rendezvous keys to one attempt of one job, e.g. the store prefix the
  // coordinator gives the attempt ("job/7/attempt/3/"). Every attempt needs its own: a retry that
  // reused an earlier attempt's keys could read that attempt's unique id and wait on a dead group.
  std::string key_prefix;
};

// The key rank 0 publishes NCCL's unique id under.
std::string NcclUniqueIdKey(const std::string& key_prefix);

// ConnectNccl's unique-id exchange, which needs no GPU: rank 0 checks that the key is not set yet
// (FailedPrecondition if it is: the prefix was used by an earlier attempt), then publishes the bytes
// `make_id` returns under NcclUniqueIdKey(key_prefix); the other ranks wait up to `timeout` for them
// and refuse a value of another size than `id_bytes`. Returns the id's bytes.
absl::StatusOr<std::string> ExchangeNcclUniqueId(
    const NcclRendezvous& rendezvous, int rank, const std::string& key_prefix, size_t id_bytes,
    std::chrono::milliseconds timeout, const std::function<absl::StatusOr<std::string>()>& make_id);

// Joins rank `rank` of `size` (every rank calls it with a rendezvous that reaches the same keys and
// the same key_prefix). InvalidArgument for a bad rank, an empty key_prefix or a device that does
// not exist; UNAVAILABLE when the group does not form within the timeout.
absl::StatusOr<std::unique_ptr<Collective>> ConnectNccl(const NcclRendezvous& rendezvous, int rank,
                                                        int size, const NcclOptions& options);

}  // namespace ptq
