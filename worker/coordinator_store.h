// Gloo's rendezvous::Store served by the coordinator (WorkerService StoreSet / StoreGet): the ranks of
// an attempt exchange their TCP addresses through it, so a cluster needs no Redis or shared file.
// Keys are put under the attempt's prefix. Errors are thrown as gloo::IoException, as Gloo expects
// of a store; ConnectGloo turns them into a status.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include <gloo/rendezvous/store.h>

#include "ptq/v1/worker_service.grpc.pb.h"

namespace ptq::worker {

class CoordinatorStore final : public gloo::rendezvous::Store {
 public:
  // REQUIRES: `stub` outlives the store. `token`: bearer token (empty: none).
  CoordinatorStore(v1::WorkerService::Stub& stub, std::string worker_id, std::string prefix,
                   std::string token);

  void set(const std::string& key, const std::vector<char>& data) override;
  std::vector<char> get(const std::string& key) override;
  void wait(const std::vector<std::string>& keys) override;
  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) override;

 private:
  std::vector<std::string> Get(const std::vector<std::string>& keys, std::chrono::milliseconds timeout);

  v1::WorkerService::Stub& stub_;
  const std::string worker_id_;
  const std::string prefix_;
  const std::string token_;
};

}  // namespace ptq::worker
