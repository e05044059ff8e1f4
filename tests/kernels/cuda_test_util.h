// What the kernel tests need to run a CUDA version beside its reference: whether a GPU is usable
// and device buffers copied from and back to host vectors. Without PTQ_HAVE_CUDA only
// CudaUnavailableReason() exists, and it always names why.
#pragma once

#include <string>
#include <vector>

#if defined(PTQ_HAVE_CUDA)
#include <cuda_runtime.h>
#endif

namespace ptq::testing {

// Empty when a CUDA device can run the kernels, else why not (for GTEST_SKIP).
inline std::string CudaUnavailableReason() {
#if defined(PTQ_HAVE_CUDA)
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) return std::string("no usable CUDA device: ") + cudaGetErrorString(e);
  if (n == 0) return "no CUDA device";
  return "";
#else
  return "built without CUDA (no toolkit found, or -DPTQ_WITH_CUDA=OFF)";
#endif
}

#if defined(PTQ_HAVE_CUDA)
// A stream of the test's own (not the legacy default stream: the launchers take theirs explicitly).
class TestStream {
 public:
  TestStream() { cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking); }
  ~TestStream() { cudaStreamDestroy(stream_); }
  TestStream(const TestStream&) = delete;
  TestStream& operator=(const TestStream&) = delete;
  cudaStream_t get() const { return stream_; }
  cudaError_t Sync() const { return cudaStreamSynchronize(stream_); }

 private:
  cudaStream_t stream_ = nullptr;
};

// A device copy of a host vector; Host() copies it back.
template <typename T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(const std::vector<T>& host) : size_(host.size()) {
    cudaMalloc(&ptr_, bytes());
    if (size_ > 0) cudaMemcpy(ptr_, host.data(), bytes(), cudaMemcpyHostToDevice);
  }
  ~DeviceBuffer() { cudaFree(ptr_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  T* get() { return static_cast<T*>(ptr_); }
  std::vector<T> Host() const {
    std::vector<T> out(size_);
    if (size_ > 0) cudaMemcpy(out.data(), ptr_, bytes(), cudaMemcpyDeviceToHost);
    return out;
  }

 private:
  size_t bytes() const { return size_ * sizeof(T) + (size_ == 0 ? 1 : 0); }
  void* ptr_ = nullptr;
  size_t size_ = 0;
};
#endif

}  // namespace ptq::testing
