// The build's version. Coordinator and workers of one cluster must agree on it: a worker of another
// version is refused at registration (the wire format of jobs and collectives may differ).
#pragma once

namespace ptq {

inline constexpr char kVersion[] = "0.2.0";

}  // namespace ptq
