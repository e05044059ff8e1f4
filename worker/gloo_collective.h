// Collective over Gloo (Debian's libgloo-dev) with its TCP transport, for CPU tensors. Ranks meet
// through a gloo::rendezvous::Store: the coordinator serves one over its gRPC API; tests and
// `ptq quantize --workers N` on one machine may use Gloo's HashStore (threads) or FileStore.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "core/dist/collective.h"

namespace gloo::rendezvous {
class Store;
}

namespace ptq::worker {

struct GlooOptions {
  std::string hostname = "127.0.0.1";  // the address peers reach this rank at
  std::chrono::milliseconds timeout{std::chrono::minutes(10)};  // per collective and for rendezvous
};

// Connects rank `rank` of `size` (all ranks call it with the same store and size).
absl::StatusOr<std::unique_ptr<Collective>> ConnectGloo(gloo::rendezvous::Store& store, int rank,
                                                        int size, const GlooOptions& options = {});

}  // namespace ptq::worker
