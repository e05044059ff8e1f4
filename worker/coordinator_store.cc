#include "worker/coordinator_store.h"

#include <grpcpp/grpcpp.h>

#include <gloo/common/error.h>

#include "absl/strings/str_cat.h"

namespace ptq::worker {
namespace {

// One StoreGet waits at most this long on the server; longer waits are several calls.
constexpr std::chrono::milliseconds kPollSlice(4000);

}  // namespace

CoordinatorStore::CoordinatorStore(v1::WorkerService::Stub& stub, std::string worker_id,
                                   std::string prefix, std::string token)
    : stub_(stub), worker_id_(std::move(worker_id)), prefix_(std::move(prefix)), token_(std::move(token)) {}

void CoordinatorStore::set(const std::string& key, const std::vector<char>& data) {
  grpc::ClientContext context;
  if (!token_.empty()) context.AddMetadata("authorization", "Bearer " + token_);
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  v1::StoreSetRequest request;
  request.set_worker_id(worker_id_);
  request.set_key(prefix_ + key);
  request.set_value(std::string(data.begin(), data.end()));
  v1::StoreSetResponse response;
  grpc::Status s = stub_.StoreSet(&context, request, &response);
  if (!s.ok()) throw gloo::IoException(absl::StrCat("rendezvous set ", key, ": ", s.error_message()));
}

std::vector<std::string> CoordinatorStore::Get(const std::vector<std::string>& keys,
                                               std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    grpc::ClientContext context;
    if (!token_.empty()) context.AddMetadata("authorization", "Bearer " + token_);
    context.set_deadline(std::chrono::system_clock::now() + kPollSlice + std::chrono::seconds(10));
    v1::StoreGetRequest request;
    request.set_worker_id(worker_id_);
    for (const auto& k : keys) request.add_keys(prefix_ + k);
    request.set_wait_ms(std::max<int64_t>(0, std::min(left, kPollSlice).count()));
    v1::StoreGetResponse response;
    grpc::Status s = stub_.StoreGet(&context, request, &response);
    if (s.ok()) return {response.values().begin(), response.values().end()};
    if (s.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED || left.count() <= 0) {
      throw gloo::IoException(absl::StrCat("rendezvous get: ", s.error_message()));
    }
  }
}

std::vector<char> CoordinatorStore::get(const std::string& key) {
  std::string value = Get({key}, kDefaultTimeout).at(0);
  return {value.begin(), value.end()};
}

void CoordinatorStore::wait(const std::vector<std::string>& keys) { Get(keys, kDefaultTimeout); }

void CoordinatorStore::wait(const std::vector<std::string>& keys,
                            const std::chrono::milliseconds& timeout) {
  Get(keys, timeout);
}

}  // namespace ptq::worker
