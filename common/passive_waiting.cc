#include "common/passive_waiting.h"

#include <unistd.h>

#include <cstdlib>
#include <utility>

namespace ptq {

void PreferPassiveThreadWaiting(char** argv) {
  bool changed = false;
  for (const auto& [name, value] : {std::pair{"OMP_WAIT_POLICY", "PASSIVE"},
                                    std::pair{"OPENBLAS_THREAD_TIMEOUT", "4"}}) {
    if (std::getenv(name) != nullptr) continue;  // the user's setting wins
    ::setenv(name, value, 1);
    changed = true;
  }
  if (changed) ::execv("/proc/self/exe", argv);  // returns only on failure: then run as we are
}

}  // namespace ptq
