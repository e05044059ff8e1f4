#include "core/dist/nccl_collective.h"

#include <ATen/ATen.h>
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <algorithm>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/metric_names.h"
#include "common/metrics.h"

namespace ptq {
namespace {

using Clock = std::chrono::steady_clock;

constexpr char kUniqueIdKey[] = "nccl/unique_id";

absl::Status CudaError(cudaError_t e, const char* what) {
  return absl::InternalError(absl::StrCat(what, ": ", cudaGetErrorString(e)));
}

absl::StatusOr<ncclDataType_t> NcclType(at::ScalarType t) {
  switch (t) {
    case at::kLong: return ncclInt64;
    case at::kFloat: return ncclFloat32;
    case at::kDouble: return ncclFloat64;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("nccl all-reduce: unsupported dtype ", c10::toString(t)));
  }
}

class NcclCollective final : public Collective {
 public:
  NcclCollective(ncclComm_t comm, cudaStream_t stream, int rank, int size, const NcclOptions& options)
      : comm_(comm), stream_(stream), rank_(rank), size_(size), options_(options) {}

  ~NcclCollective() override {
    cudaSetDevice(options_.cuda_device);
    if (comm_ != nullptr) ncclCommAbort(comm_);  // no collective is in flight between calls
    if (buffer_ != nullptr) cudaFree(buffer_);
    cudaStreamDestroy(stream_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "nccl"; }

  absl::Status AllReduceSum(at::Tensor& t) override {
    if (!t.is_contiguous()) return absl::InvalidArgumentError("nccl all-reduce needs a contiguous tensor");
    auto type = NcclType(t.scalar_type());
    if (!type.ok()) return type.status();
    if (t.numel() == 0) return absl::OkStatus();
    auto data = OnDevice(t);
    if (!data.ok()) return data.status();
    if (auto s = Check(ncclAllReduce(*data, *data, t.numel(), *type, ncclSum, comm_, stream_),
                       "all-reduce");
        !s.ok()) {
      return s;
    }
    if (auto s = FinishInPlace(t, "all-reduce"); !s.ok()) return s;
    Count("all_reduce", t.nbytes());
    return absl::OkStatus();
  }

  // One ncclReduce to each owner of its rows, grouped into one launch.
  absl::Status ReduceScatterRows(at::Tensor& t, const std::vector<int64_t>& rows) override {
    if (auto s = CheckRowPlan(t, rows, size_); !s.ok()) return s;
    if (!t.is_contiguous()) return absl::InvalidArgumentError("nccl reduce-scatter needs a contiguous tensor");
    auto type = NcclType(t.scalar_type());
    if (!type.ok()) return type.status();
    if (t.numel() == 0) return absl::OkStatus();
    auto device_data = OnDevice(t);
    if (!device_data.ok()) return device_data.status();
    uint8_t* data = *device_data;
    const int64_t row_elements = t.numel() / t.size(0);
    const int64_t row_bytes = row_elements * static_cast<int64_t>(t.element_size());
    ncclGroupStart();
    int64_t row0 = 0;
    for (int r = 0; r < size_; ++r) {
      if (rows[r] > 0) {
        uint8_t* part = data + row0 * row_bytes;
        ncclResult_t result = ncclReduce(part, part, static_cast<size_t>(rows[r] * row_elements), *type,
                                         ncclSum, r, comm_, stream_);
        if (result != ncclSuccess && result != ncclInProgress) {
          ncclGroupEnd();
          return Check(result, "reduce-scatter");
        }
      }
      row0 += rows[r];
    }
    if (auto s = Check(ncclGroupEnd(), "reduce-scatter"); !s.ok()) return s;
    if (auto s = FinishInPlace(t, "reduce-scatter"); !s.ok()) return s;
    ZeroRowsOfOtherRanks(t, rows, rank_);
    Count("reduce_scatter", t.nbytes());
    return absl::OkStatus();
  }

  absl::StatusOr<at::Tensor> AllGatherRows(const at::Tensor& mine,
                                           const std::vector<int64_t>& rows) override {
    if (static_cast<int>(rows.size()) != size_ || rows[rank_] != mine.size(0)) {
      return absl::InvalidArgumentError("gather plan does not match this rank's rows");
    }
    const at::Tensor in = mine.contiguous();
    int64_t row_bytes = static_cast<int64_t>(mine.element_size());
    for (int64_t d = 1; d < mine.dim(); ++d) row_bytes *= mine.size(d);
    std::vector<int64_t> shape = mine.sizes().vec();
    int64_t total = 0;
    for (int64_t r : rows) total += r;
    shape[0] = total;
    at::Tensor out = at::empty(shape, mine.options());
    if (total == 0) return out;
    cudaSetDevice(options_.cuda_device);
    // One broadcast per rank of its rows (ranks may hold different numbers), grouped into one launch.
    // On the CPU both sides go through the staging buffer: this rank's rows at its offset first.
    const bool on_device = mine.device().is_cuda();
    uint8_t* base = nullptr;
    std::vector<int64_t> offset(size_ + 1, 0);
    for (int r = 0; r < size_; ++r) offset[r + 1] = offset[r] + rows[r] * row_bytes;
    if (on_device) {
      base = static_cast<uint8_t*>(out.data_ptr());
    } else {
      if (auto s = Reserve(offset[size_]); !s.ok()) return s;
      base = static_cast<uint8_t*>(buffer_);
    }
    const uint8_t* send = nullptr;
    if (rows[rank_] > 0) {
      if (on_device) {
        send = static_cast<const uint8_t*>(in.data_ptr());
      } else {
        cudaError_t e = cudaMemcpyAsync(base + offset[rank_], in.data_ptr(), in.nbytes(),
                                        cudaMemcpyHostToDevice, stream_);
        if (e != cudaSuccess) return CudaError(e, "copy to the device");
        send = base + offset[rank_];
      }
    }
    ncclGroupStart();
    for (int r = 0; r < size_; ++r) {
      if (rows[r] == 0) continue;
      ncclResult_t result = ncclBroadcast(r == rank_ ? send : nullptr, base + offset[r],
                                          static_cast<size_t>(offset[r + 1] - offset[r]), ncclUint8,
                                          r, comm_, stream_);
      if (result != ncclSuccess && result != ncclInProgress) {
        ncclGroupEnd();
        return Check(result, "all-gather");
      }
    }
    if (auto s = Check(ncclGroupEnd(), "all-gather"); !s.ok()) return s;
    if (!on_device) {
      cudaError_t e = cudaMemcpyAsync(out.data_ptr(), base, offset[size_], cudaMemcpyDeviceToHost, stream_);
      if (e != cudaSuccess) return CudaError(e, "copy from the device");
    }
    if (auto s = Wait("all-gather"); !s.ok()) return s;
    Count("all_gather", in.nbytes());
    return out;
  }

  absl::Status Barrier() override {
    at::Tensor one = at::ones({1}, at::kLong);
    return AllReduceSum(one);
  }

 private:
  // Grows the device staging buffer to at least `bytes`.
  absl::Status Reserve(size_t bytes) {
    if (bytes <= capacity_) return absl::OkStatus();
    if (buffer_ != nullptr) cudaFree(buffer_);
    buffer_ = nullptr;
    capacity_ = 0;
    cudaError_t e = cudaMalloc(&buffer_, bytes);
    if (e != cudaSuccess) return CudaError(e, "staging buffer");
    capacity_ = bytes;
    return absl::OkStatus();
  }

  // Where an in-place collective on `t` works: its own memory on the GPU, or the staging buffer
  // holding a copy of a CPU tensor.
  absl::StatusOr<uint8_t*> OnDevice(at::Tensor& t) {
    cudaSetDevice(options_.cuda_device);
    if (t.device().is_cuda()) return static_cast<uint8_t*>(t.data_ptr());
    if (auto s = Reserve(t.nbytes()); !s.ok()) return s;
    cudaError_t e = cudaMemcpyAsync(buffer_, t.data_ptr(), t.nbytes(), cudaMemcpyHostToDevice, stream_);
    if (e != cudaSuccess) return CudaError(e, "copy to the device");
    return static_cast<uint8_t*>(buffer_);
  }

  // After an in-place collective: a CPU tensor gets the staging buffer back; then waits for the stream.
  absl::Status FinishInPlace(at::Tensor& t, const char* what) {
    if (!t.device().is_cuda()) {
      cudaError_t e = cudaMemcpyAsync(t.data_ptr(), buffer_, t.nbytes(), cudaMemcpyDeviceToHost, stream_);
      if (e != cudaSuccess) return CudaError(e, "copy from the device");
    }
    return Wait(what);
  }

  absl::Status Check(ncclResult_t result, const char* what) {
    if (result == ncclSuccess || result == ncclInProgress) return absl::OkStatus();
    return Fail(what, ncclGetErrorString(result));
  }

  // Waits for the stream while watching the communicator: an asynchronous error (a peer gone) or
  // the timeout aborts the communicator, which also releases the stream.
  absl::Status Wait(const char* what) {
    const auto deadline = Clock::now() + options_.timeout;
    while (true) {
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(comm_, &async);
      if (async != ncclSuccess && async != ncclInProgress) return Fail(what, ncclGetErrorString(async));
      const cudaError_t e = cudaStreamQuery(stream_);
      if (e == cudaSuccess) return absl::OkStatus();
      if (e != cudaErrorNotReady) return Fail(what, cudaGetErrorString(e));
      if (Clock::now() >= deadline) {
        return Fail(what, absl::StrCat("no progress within ", options_.timeout.count(), " ms").c_str());
      }
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }

  absl::Status Fail(const char* what, const char* why) {
    if (comm_ != nullptr) ncclCommAbort(comm_);
    comm_ = nullptr;
    return absl::UnavailableError(absl::StrCat("nccl ", what, " failed (a peer left?): ", why));
  }

  void Count(const char* op, size_t bytes) {
    bytes_ += bytes;
    metrics::CounterFor(metrics::GlobalRegistry(), metrics::names::kCollectiveBytes, {{"op", op}})
        .Increment(static_cast<double>(bytes));
  }

  ncclComm_t comm_;
  cudaStream_t stream_;
  const int rank_;
  const int size_;
  const NcclOptions options_;
  void* buffer_ = nullptr;
  size_t capacity_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Collective>> ConnectNccl(const NcclRendezvous& rendezvous, int rank,
                                                        int size, const NcclOptions& options) {
  if (size < 1 || rank < 0 || rank >= size) {
    return absl::InvalidArgumentError(absl::StrCat("rank ", rank, " of ", size, " is not valid"));
  }
  cudaError_t e = cudaSetDevice(options.cuda_device);
  if (e != cudaSuccess) return CudaError(e, absl::StrCat("cuda:", options.cuda_device).c_str());
  ncclUniqueId id;
  if (rank == 0) {
    if (ncclResult_t r = ncclGetUniqueId(&id); r != ncclSuccess) {
      return absl::UnavailableError(absl::StrCat("ncclGetUniqueId: ", ncclGetErrorString(r)));
    }
    if (auto s = rendezvous.set(kUniqueIdKey, std::string(id.internal, sizeof(id.internal))); !s.ok()) {
      return s;
    }
  } else {
    auto value = rendezvous.get(kUniqueIdKey, options.timeout);
    if (!value.ok()) return value.status();
    if (value->size() != sizeof(id.internal)) {
      return absl::DataLossError(absl::StrCat("nccl unique id of ", value->size(), " bytes"));
    }
    std::copy(value->begin(), value->end(), id.internal);
  }
  cudaStream_t stream;
  e = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
  if (e != cudaSuccess) return CudaError(e, "stream");
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;  // so a peer that never joins cannot hang us: poll with a deadline below
  ncclComm_t comm = nullptr;
  ncclResult_t result = ncclCommInitRankConfig(&comm, size, id, rank, &config);
  const auto deadline = Clock::now() + options.timeout;
  while (result == ncclInProgress) {
    if (Clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    ncclCommGetAsyncError(comm, &result);
  }
  if (result != ncclSuccess) {
    if (comm != nullptr) ncclCommAbort(comm);
    cudaStreamDestroy(stream);
    return absl::UnavailableError(absl::StrCat(
        "rank ", rank, " of ", size, " could not join the NCCL group: ",
        result == ncclInProgress ? "timed out" : ncclGetErrorString(result)));
  }
  return std::unique_ptr<Collective>(new NcclCollective(comm, stream, rank, size, options));
}

}  // namespace ptq
