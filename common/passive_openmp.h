// libgomp reads OMP_WAIT_POLICY once, when it loads: spinning OpenMP workers otherwise compete with
// OpenBLAS's threads for the cores (measured 2-3x slower on 2 cores). Our binaries call this first
// thing in main: it sets PASSIVE and re-executes the process, unless the variable is already set.
#pragma once

namespace ptq {

void PreferPassiveOpenMpWaiting(char** argv);

}  // namespace ptq
