// glibc's malloc hands blocks of 128 KiB and more straight back to the kernel when they are freed
// (and trims the heap's free top), so each block stage's temporaries are page-faulted and zeroed
// anew: on the 2-core VM a third of a quantization's CPU time (docs/results.md). Our binaries call
// this first thing in main: blocks up to 32 MiB (glibc's largest setting) come from the heap and are
// reused, and up to 1 GiB of freed heap stays mapped. An explicit MALLOC_MMAP_THRESHOLD_ or
// MALLOC_TRIM_THRESHOLD_ in the environment wins.
#pragma once

namespace ptq {

void KeepFreedMemoryForReuse();

}  // namespace ptq
