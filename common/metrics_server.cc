#include "common/metrics_server.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

#ifdef PTQ_HAVE_MICROHTTPD
#include <microhttpd.h>
#endif

namespace ptq::metrics {
namespace {

#ifdef PTQ_HAVE_MICROHTTPD
#if MHD_VERSION >= 0x00097002
using HandlerResult = MHD_Result;
#else
using HandlerResult = int;
#endif

HandlerResult HandleRequest(void* data, MHD_Connection* connection, const char* url,
                            const char* method, const char* /*version*/, const char* /*upload*/,
                            size_t* /*upload_size*/, void** /*state*/) {
  auto* registry = static_cast<Registry*>(data);
  if (std::strcmp(method, "GET") != 0 && std::strcmp(method, "HEAD") != 0) {
    static const char kBody[] = "only GET\n";
    MHD_Response* r = MHD_create_response_from_buffer(sizeof(kBody) - 1, const_cast<char*>(kBody),
                                                      MHD_RESPMEM_PERSISTENT);
    HandlerResult ret = MHD_queue_response(connection, MHD_HTTP_METHOD_NOT_ALLOWED, r);
    MHD_destroy_response(r);
    return ret;
  }
  const bool is_metrics = std::strcmp(url, "/metrics") == 0;
  std::string body;
  if (is_metrics) {
    UpdateProcessMetrics(*registry);
    body = registry->Render();
  } else {
    body = "PTQ Service: metrics are at /metrics\n";
  }
  MHD_Response* r =
      MHD_create_response_from_buffer(body.size(), body.data(), MHD_RESPMEM_MUST_COPY);
  MHD_add_response_header(r, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
  HandlerResult ret = MHD_queue_response(connection, is_metrics ? MHD_HTTP_OK : MHD_HTTP_NOT_FOUND, r);
  MHD_destroy_response(r);
  return ret;
}
#endif

// HOST:PORT (HOST may be a name, an IPv4 address or empty for all interfaces) -> a socket address.
absl::StatusOr<sockaddr_in> ResolveAddress(const std::string& address) {
  const size_t colon = address.rfind(':');
  int port = -1;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics address '", address, "' is not HOST:PORT"));
  }
  std::string host = address.substr(0, colon);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (host.empty() || host == "0.0.0.0" || host == "*") {
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    return addr;
  }
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* result = nullptr;
  if (getaddrinfo(host.c_str(), nullptr, &hints, &result) != 0 || result == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics address '", address, "': cannot resolve host '", host, "'"));
  }
  addr.sin_addr = reinterpret_cast<sockaddr_in*>(result->ai_addr)->sin_addr;
  freeaddrinfo(result);
  return addr;
}

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(const std::string& address,
                                                                    Registry& registry) {
  absl::StatusOr<sockaddr_in> addr = ResolveAddress(address);
  if (!addr.ok()) return addr.status();
#ifdef PTQ_HAVE_MICROHTTPD
  std::unique_ptr<MetricsServer> server(new MetricsServer(registry));
  // One internal thread with the default stack size: a fixed small stack (civetweb's) cannot hold
  // libtorch's static TLS, and pthread_create then fails with EINVAL.
  server->daemon_ = MHD_start_daemon(
      MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, ntohs(addr->sin_port), nullptr, nullptr,
      &HandleRequest, &registry, MHD_OPTION_SOCK_ADDR, reinterpret_cast<const sockaddr*>(&*addr),
      MHD_OPTION_CONNECTION_LIMIT, 64u, MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_END);
  if (server->daemon_ == nullptr) {
    return absl::UnavailableError(absl::StrCat("cannot serve metrics on '", address,
                                               "': address in use or not available"));
  }
  const MHD_DaemonInfo* info = MHD_get_daemon_info(server->daemon_, MHD_DAEMON_INFO_BIND_PORT);
  server->port_ = info != nullptr ? info->port : ntohs(addr->sin_port);
  return server;
#else
  (void)registry;
  return absl::UnimplementedError("this build has no metrics endpoint (libmicrohttpd-dev was not found)");
#endif
}

MetricsServer::~MetricsServer() {
#ifdef PTQ_HAVE_MICROHTTPD
  if (daemon_ != nullptr) MHD_stop_daemon(daemon_);
#endif
}

}  // namespace ptq::metrics
