// Confinement of the paths a job names (issue 9): a coordinator configured with allowed roots accepts
// a model, calibration, evaluation or output path only if it is absolute, has no ".." component, and
// resolves - symlinks followed, for the output the nearest existing ancestor - to a place under one of
// the roots. A path that escapes through a symlink is refused like one that names another place.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace ptq {

// PERMISSION_DENIED naming `what` and the path when it is not under `roots`; OK when `roots` is
// empty (no confinement configured).
absl::Status CheckPathUnderRoots(const std::string& path, const std::vector<std::string>& roots,
                                 const std::string& what);

}  // namespace ptq
