// Paths the tests share: the demo model and texts kept in the repository.
#pragma once

#include <string>

namespace ptq::testing {

inline std::string SourceDir() { return PTQ_SOURCE_DIR; }
inline std::string DemoModelDir() { return SourceDir() + "/models/demo/tiny-llama-bytes"; }
inline std::string DemoCalibText() { return SourceDir() + "/models/demo/data/calib.txt"; }
inline std::string DemoValidText() { return SourceDir() + "/models/demo/data/valid.txt"; }

}  // namespace ptq::testing
