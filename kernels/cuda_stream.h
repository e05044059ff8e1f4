// The stream a CUDA launcher runs on, named without the CUDA headers (the kernel headers are also
// compiled by code that has no toolkit): cudaStream_t is `CUstream_st*`, so CudaStream is the same
// type. nullptr is the legacy default stream; the ATen entries (kernels/aten_kernels.h) pass ATen's
// current stream of the tensors' device instead, so launches are ordered with ATen's own work.
#pragma once

struct CUstream_st;

namespace ptq::kernels {

using CudaStream = CUstream_st*;

}  // namespace ptq::kernels
