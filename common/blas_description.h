// Which BLAS a process runs, for reports: OpenBLAS's kernels (chosen by CPU model, or forced by
// OPENBLAS_CORETYPE) and its thread count set the GEMMs' summation order, hence a checkpoint's last
// bits, so a report that claims "the same bytes" must say which kernels it ran.
#pragma once

#include <string>

namespace ptq {

// OpenBLAS's configuration line, which names the kernels in use ("OpenBLAS 0.3.21 ... Haswell
// MAX_THREADS=64"), or "" when the BLAS this process loaded is another library (looked up, not
// linked: the binaries link the generic libblas.so.3, which Debian may point at another BLAS).
std::string LoadedBlasDescription();

}  // namespace ptq
