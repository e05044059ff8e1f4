// Serves a metrics Registry at http://HOST:PORT/metrics (text format 0.0.4) with Debian's embedded
// libmicrohttpd (Debian's libmicrohttpd-dev). RAII: the endpoint is up from a successful Start until the object is destroyed.
// When the build lacks libmicrohttpd, Start returns Unimplemented.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/metrics.h"

struct MHD_Daemon;

namespace ptq::metrics {

class MetricsServer {
 public:
  // `address` is HOST:PORT; port 0 picks a free port (see port()). REQUIRES: `registry` outlives the
  // server.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& address,
                                                             Registry& registry);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  int port() const { return port_; }
  Registry& registry() { return registry_; }

 private:
  explicit MetricsServer(Registry& registry) : registry_(registry) {}
  Registry& registry_;
  MHD_Daemon* daemon_ = nullptr;
  int port_ = 0;
};

}  // namespace ptq::metrics
