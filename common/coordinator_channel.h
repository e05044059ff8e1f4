// The gRPC channel a client (the CLI, a worker) opens to the coordinator. Header-only because
// common/ does not link gRPC; every file that includes it does (client, worker).
#pragma once

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include <memory>
#include <string>

namespace ptq {

// gRPC's own reconnect backoff grows to 2 minutes by default, and while it waits every call fails
// at once even when the coordinator is back: a worker would sit out a restarted coordinator that
// long, holding the job's next attempt (and a finished checkpoint waiting to commit). Reconnect
// attempts stay at most this far apart, below our own retry delays.
constexpr int kMaxCoordinatorReconnectBackoffMs = 2000;

inline std::shared_ptr<grpc::Channel> NewCoordinatorChannel(
    const std::string& address, std::shared_ptr<grpc::ChannelCredentials> credentials) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 250);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 250);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, kMaxCoordinatorReconnectBackoffMs);
  return grpc::CreateCustomChannel(
      address, credentials != nullptr ? credentials : grpc::InsecureChannelCredentials(), args);
}

}  // namespace ptq
