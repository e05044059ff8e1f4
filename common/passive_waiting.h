// Two thread pools share the cores: libgomp's (ATen's elementwise ops) and OpenBLAS's pthread pool
// (the GEMMs). Each keeps its idle threads spinning after a parallel region, libgomp by default and
// OpenBLAS for 2^28 cycles (about 0.1 s) of sched_yield, so each pool's spinners take cores from
// the other's workers: spinning libgomp measured 2-3x slower on 2 cores, spinning OpenBLAS a fifth
// of a quantization's CPU seconds (docs/results.md). Both libraries read their setting once, when
// they load, so our binaries call this first thing in main: it sets OMP_WAIT_POLICY=PASSIVE and
// OPENBLAS_THREAD_TIMEOUT=4 (2^4 cycles of spinning, then a sleep) where unset, and re-executes the
// process once. Neither changes a result (OpenBLAS's thread count, which does, stays as it was).
#pragma once

namespace ptq {

void PreferPassiveThreadWaiting(char** argv);

}  // namespace ptq
