#include "core/dist/nccl_collective.h"

#include <ATen/ATen.h>
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <algorithm>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/metric_names.h"
#include "common/metrics.h"

#if defined(PTQ_TORCH_CUDA)
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace ptq {
namespace {

using Clock = std::chrono::steady_clock;

absl::Status CudaError(cudaError_t e, const std::string& what) {
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

// Makes `device` current for the scope and restores the caller's device after (ranks may be
// threads of one process, each with its own device).
class DeviceScope {
 public:
  explicit DeviceScope(int device) {
    if (cudaGetDevice(&previous_) != cudaSuccess) previous_ = -1;
    status_ = previous_ == device ? cudaSuccess : cudaSetDevice(device);
  }
  ~DeviceScope() {
    if (previous_ >= 0) cudaSetDevice(previous_);
  }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;
  cudaError_t status() const { return status_; }

 private:
  int previous_ = -1;
  cudaError_t status_ = cudaSuccess;
};

// Polls a non-blocking communicator until it is no longer in progress (ncclSuccess), an error, or
// the deadline (then ncclInProgress is returned).
ncclResult_t WaitUntilReady(ncclComm_t comm, Clock::time_point deadline) {
  while (true) {
    ncclResult_t state = ncclInProgress;
    const ncclResult_t r = ncclCommGetAsyncError(comm, &state);
    if (r != ncclSuccess) return r;
    if (state != ncclInProgress) return state;
    if (Clock::now() >= deadline) return ncclInProgress;
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
}

class NcclCollective final : public Collective {
 public:
  NcclCollective(ncclComm_t comm, cudaStream_t stream, cudaEvent_t aten_done, int rank, int size,
                 const NcclOptions& options)
      : comm_(comm), stream_(stream), aten_done_(aten_done), rank_(rank), size_(size),
        options_(options) {}

  ~NcclCollective() override {
    DeviceScope scope(options_.cuda_device);
    // Every call waits for its work, so nothing is in flight: abort never waits on peers.
    if (comm_ != nullptr) ncclCommAbort(comm_);
    if (buffer_ != nullptr) cudaFree(buffer_);
    cudaEventDestroy(aten_done_);
    cudaStreamDestroy(stream_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "nccl"; }

  absl::Status AllReduceSum(at::Tensor& t) override {
    if (auto s = Usable(t, "all-reduce"); !s.ok()) return s;
    if (!t.is_contiguous()) return absl::InvalidArgumentError("nccl all-reduce needs a contiguous tensor");
    auto type = NcclType(t.scalar_type());
    if (!type.ok()) return type.status();
    if (t.numel() == 0) return absl::OkStatus();
    const auto deadline = Clock::now() + options_.timeout;
    DeviceScope scope(options_.cuda_device);
    auto data = OnDevice(t);
    if (!data.ok()) return data.status();
    if (auto s = Enqueued(ncclAllReduce(*data, *data, t.numel(), *type, ncclSum, comm_, stream_),
                          "all-reduce", deadline);
        !s.ok()) {
      return s;
    }
    if (auto s = FinishInPlace(t, "all-reduce", deadline); !s.ok()) return s;
    Count("all_reduce", t.nbytes());
    return absl::OkStatus();
  }

  // One ncclReduce to each owner of its rows, grouped into one launch.
  absl::Status ReduceScatterRows(at::Tensor& t, const std::vector<int64_t>& rows) override {
    if (auto s = Usable(t, "reduce-scatter"); !s.ok()) return s;
    if (auto s = CheckRowPlan(t, rows, size_); !s.ok()) return s;
    if (!t.is_contiguous()) return absl::InvalidArgumentError("nccl reduce-scatter needs a contiguous tensor");
    auto type = NcclType(t.scalar_type());
    if (!type.ok()) return type.status();
    if (t.numel() == 0) return absl::OkStatus();
    const auto deadline = Clock::now() + options_.timeout;
    DeviceScope scope(options_.cuda_device);
    auto device_data = OnDevice(t);
    if (!device_data.ok()) return device_data.status();
    uint8_t* data = *device_data;
    const int64_t row_elements = t.numel() / t.size(0);
    const int64_t row_bytes = row_elements * static_cast<int64_t>(t.element_size());
    if (ncclResult_t r = ncclGroupStart(); r != ncclSuccess) return Fail("reduce-scatter", ncclGetErrorString(r));
    int64_t row0 = 0;
    for (int r = 0; r < size_; ++r) {
      if (rows[r] > 0) {
        uint8_t* part = data + row0 * row_bytes;
        const ncclResult_t result = ncclReduce(part, part, static_cast<size_t>(rows[r] * row_elements),
                                               *type, ncclSum, r, comm_, stream_);
        if (result != ncclSuccess && result != ncclInProgress) {
          ncclGroupEnd();
          return Fail("reduce-scatter", ncclGetErrorString(result));
        }
      }
      row0 += rows[r];
    }
    if (auto s = Enqueued(ncclGroupEnd(), "reduce-scatter", deadline); !s.ok()) return s;
    if (auto s = FinishInPlace(t, "reduce-scatter", deadline); !s.ok()) return s;
    ZeroRowsOfOtherRanks(t, rows, rank_);
    Count("reduce_scatter", t.nbytes());
    return absl::OkStatus();
  }

  absl::StatusOr<at::Tensor> AllGatherRows(const at::Tensor& mine,
                                           const std::vector<int64_t>& rows) override {
    if (auto s = Usable(mine, "all-gather"); !s.ok()) return s;
    if (static_cast<int>(rows.size()) != size_ || mine.dim() == 0 || rows[rank_] != mine.size(0)) {
      return absl::InvalidArgumentError("gather plan does not match this rank's rows");
    }
    const auto deadline = Clock::now() + options_.timeout;
    DeviceScope scope(options_.cuda_device);
    const at::Tensor in = mine.contiguous();
    int64_t row_bytes = static_cast<int64_t>(mine.element_size());
    for (int64_t d = 1; d < mine.dim(); ++d) row_bytes *= mine.size(d);
    std::vector<int64_t> shape = mine.sizes().vec();
    int64_t total = 0;
    for (int64_t r : rows) total += r;
    shape[0] = total;
    at::Tensor out = at::empty(shape, mine.options());
    if (total == 0) return out;
    // One broadcast per rank of its rows (ranks may hold different numbers), grouped into one launch.
    // On the CPU both sides go through the staging buffer: this rank's rows at its offset first.
    const bool on_device = mine.device().is_cuda();
    uint8_t* base = nullptr;
    std::vector<int64_t> offset(size_ + 1, 0);
    for (int r = 0; r < size_; ++r) offset[r + 1] = offset[r] + rows[r] * row_bytes;
    if (on_device) {
      // `in` and `out` come from ATen's current stream; NCCL's waits for what is queued there.
      if (auto s = AfterAten(); !s.ok()) return s;
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
    if (ncclResult_t r = ncclGroupStart(); r != ncclSuccess) return Fail("all-gather", ncclGetErrorString(r));
    for (int r = 0; r < size_; ++r) {
      if (rows[r] == 0) continue;
      const ncclResult_t result =
          ncclBroadcast(r == rank_ ? send : nullptr, base + offset[r],
                        static_cast<size_t>(offset[r + 1] - offset[r]), ncclUint8, r, comm_, stream_);
      if (result != ncclSuccess && result != ncclInProgress) {
        ncclGroupEnd();
        return Fail("all-gather", ncclGetErrorString(result));
      }
    }
    if (auto s = Enqueued(ncclGroupEnd(), "all-gather", deadline); !s.ok()) return s;
    if (on_device) {
      RecordForNccl(in);
      RecordForNccl(out);
    } else {
      cudaError_t e = cudaMemcpyAsync(out.data_ptr(), base, offset[size_], cudaMemcpyDeviceToHost, stream_);
      if (e != cudaSuccess) return CudaError(e, "copy from the device");
    }
    if (auto s = Wait("all-gather", deadline); !s.ok()) return s;
    Count("all_gather", in.nbytes());
    return out;
  }

  absl::Status Barrier() override {
    at::Tensor one = at::ones({1}, at::kLong);
    return AllReduceSum(one);
  }

 private:
  // A tensor this rank can hand to NCCL: on the CPU or on the communicator's device, with a
  // communicator that has not failed.
  absl::Status Usable(const at::Tensor& t, const char* what) const {
    if (comm_ == nullptr) {
      return absl::UnavailableError(absl::StrCat("nccl ", what, ": the group failed earlier"));
    }
    if (!t.defined()) return absl::InvalidArgumentError(absl::StrCat("nccl ", what, ": undefined tensor"));
    if (t.device().is_cpu()) return absl::OkStatus();
    if (!t.device().is_cuda()) {
      return absl::InvalidArgumentError(
          absl::StrCat("nccl ", what, ": a tensor on ", t.device().str(), " (CPU or CUDA only)"));
    }
    if (t.device().index() != options_.cuda_device) {
      return absl::InvalidArgumentError(absl::StrCat("nccl ", what, ": a tensor on ", t.device().str(),
                                                     ", but rank ", rank_, "'s communicator is on cuda:",
                                                     options_.cuda_device));
    }
    return absl::OkStatus();
  }

  // Orders the group's stream after everything queued so far on ATen's current stream of the
  // device. Without a CUDA libtorch no CUDA tensor exists, so there is nothing to order after.
  absl::Status AfterAten() {
#if defined(PTQ_TORCH_CUDA)
    const cudaStream_t aten =
        c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(options_.cuda_device)).stream();
    if (aten == stream_) return absl::OkStatus();
    cudaError_t e = cudaEventRecord(aten_done_, aten);
    if (e == cudaSuccess) e = cudaStreamWaitEvent(stream_, aten_done_, 0);
    if (e != cudaSuccess) return CudaError(e, "ordering the NCCL stream after ATen's");
#endif
    return absl::OkStatus();
  }

  // Tells ATen's caching allocator that the group's stream uses `t`'s memory, so freeing `t` does
  // not hand the memory out again before that stream's work is done.
  void RecordForNccl(const at::Tensor& t) {
#if defined(PTQ_TORCH_CUDA)
    if (!t.is_cuda() || t.numel() == 0) return;
    c10::cuda::CUDACachingAllocator::recordStream(
        t.storage().data_ptr(),
        c10::cuda::getStreamFromExternal(stream_, static_cast<c10::DeviceIndex>(options_.cuda_device)));
#else
    (void)t;
#endif
  }

  // Grows the device staging buffer to at least `bytes`.
  absl::Status Reserve(size_t bytes) {
    if (bytes <= capacity_) return absl::OkStatus();
    if (buffer_ != nullptr) {
      cudaStreamSynchronize(stream_);  // the old buffer may still be read by queued work
      cudaFree(buffer_);
    }
    buffer_ = nullptr;
    capacity_ = 0;
    cudaError_t e = cudaMalloc(&buffer_, bytes);
    if (e != cudaSuccess) return CudaError(e, "staging buffer");
    capacity_ = bytes;
    return absl::OkStatus();
  }

  // Where an in-place collective on `t` works: its own memory on the GPU (after ATen's pending work
  // on it), or the staging buffer holding a copy of a CPU tensor.
  absl::StatusOr<uint8_t*> OnDevice(at::Tensor& t) {
    if (t.device().is_cuda()) {
      if (auto s = AfterAten(); !s.ok()) return s;
      return static_cast<uint8_t*>(t.data_ptr());
    }
    if (auto s = Reserve(t.nbytes()); !s.ok()) return s;
    cudaError_t e = cudaMemcpyAsync(buffer_, t.data_ptr(), t.nbytes(), cudaMemcpyHostToDevice, stream_);
    if (e != cudaSuccess) return CudaError(e, "copy to the device");
    return static_cast<uint8_t*>(buffer_);
  }

  // After an in-place collective: a CPU tensor gets the staging buffer back, a CUDA tensor is
  // recorded for the group's stream; then waits for the stream.
  absl::Status FinishInPlace(at::Tensor& t, const char* what, Clock::time_point deadline) {
    if (t.device().is_cuda()) {
      RecordForNccl(t);
    } else {
      cudaError_t e = cudaMemcpyAsync(t.data_ptr(), buffer_, t.nbytes(), cudaMemcpyDeviceToHost, stream_);
      if (e != cudaSuccess) return CudaError(e, "copy from the device");
    }
    return Wait(what, deadline);
  }

  // After an NCCL call on the non-blocking communicator: an error fails the group; ncclInProgress
  // means the call is still being set up, so wait until the communicator says it is done (only then
  // is the work queued on the stream, and waiting for the stream means waiting for the result).
  absl::Status Enqueued(ncclResult_t result, const char* what, Clock::time_point deadline) {
    if (result != ncclSuccess && result != ncclInProgress) return Fail(what, ncclGetErrorString(result));
    const ncclResult_t state = WaitUntilReady(comm_, deadline);
    if (state == ncclSuccess) return absl::OkStatus();
    if (state == ncclInProgress) return Fail(what, TimedOut().c_str());
    return Fail(what, ncclGetErrorString(state));
  }

  // Waits for the stream while watching the communicator: an asynchronous error (a peer gone) or
  // the deadline aborts the communicator, which also releases the stream.
  absl::Status Wait(const char* what, Clock::time_point deadline) {
    while (true) {
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(comm_, &async);
      if (async != ncclSuccess && async != ncclInProgress) return Fail(what, ncclGetErrorString(async));
      const cudaError_t e = cudaStreamQuery(stream_);
      if (e == cudaSuccess && async == ncclSuccess) return absl::OkStatus();
      if (e != cudaSuccess && e != cudaErrorNotReady) return Fail(what, cudaGetErrorString(e));
      if (Clock::now() >= deadline) return Fail(what, TimedOut().c_str());
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }

  std::string TimedOut() const {
    return absl::StrCat("no progress within ", options_.timeout.count(), " ms");
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
  cudaEvent_t aten_done_;
  const int rank_;
  const int size_;
  const NcclOptions options_;
  void* buffer_ = nullptr;
  size_t capacity_ = 0;
};

}  // namespace

std::string NcclUniqueIdKey(const std::string& key_prefix) {
  return absl::StrCat(key_prefix, "nccl/unique_id");
}

absl::StatusOr<std::string> ExchangeNcclUniqueId(
    const NcclRendezvous& rendezvous, int rank, const std::string& key_prefix, size_t id_bytes,
    std::chrono::milliseconds timeout, const std::function<absl::StatusOr<std::string>()>& make_id) {
  if (key_prefix.empty()) {
    return absl::InvalidArgumentError(
        "nccl rendezvous: empty key prefix (scope the keys by job and attempt, so a retry never "
        "reads an earlier attempt's unique id)");
  }
  const std::string key = NcclUniqueIdKey(key_prefix);
  if (rank == 0) {
    auto existing = rendezvous.get(key, std::chrono::milliseconds(0));
    if (existing.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "nccl rendezvous: ", key, " is already set: the key prefix was used by an earlier "
          "attempt; every attempt needs its own"));
    }
    if (!absl::IsDeadlineExceeded(existing.status()) && !absl::IsNotFound(existing.status())) {
      return existing.status();
    }
    auto id = make_id();
    if (!id.ok()) return id.status();
    if (id->size() != id_bytes) {
      return absl::InternalError(absl::StrCat("nccl unique id of ", id->size(), " bytes"));
    }
    if (auto s = rendezvous.set(key, *id); !s.ok()) return s;
    return *id;
  }
  auto value = rendezvous.get(key, timeout);
  if (!value.ok()) return value.status();
  if (value->size() != id_bytes) {
    return absl::DataLossError(absl::StrCat("nccl unique id under ", key, " has ", value->size(),
                                            " bytes, not ", id_bytes));
  }
  return *value;
}

absl::StatusOr<std::unique_ptr<Collective>> ConnectNccl(const NcclRendezvous& rendezvous, int rank,
                                                        int size, const NcclOptions& options) {
  if (size < 1 || rank < 0 || rank >= size) {
    return absl::InvalidArgumentError(absl::StrCat("rank ", rank, " of ", size, " is not valid"));
  }
  if (options.key_prefix.empty()) {
    return absl::InvalidArgumentError(
        "NcclOptions::key_prefix is empty: scope the rendezvous keys by job and attempt");
  }
  int devices = 0;
  if (cudaError_t e = cudaGetDeviceCount(&devices); e != cudaSuccess) {
    return absl::FailedPreconditionError(
        absl::StrCat("nccl: no usable CUDA device: ", cudaGetErrorString(e)));
  }
  if (options.cuda_device < 0 || options.cuda_device >= devices) {
    return absl::InvalidArgumentError(absl::StrCat("nccl: cuda:", options.cuda_device,
                                                   " does not exist (", devices, " devices visible)"));
  }
  DeviceScope scope(options.cuda_device);
  if (scope.status() != cudaSuccess) {
    return CudaError(scope.status(), absl::StrCat("cuda:", options.cuda_device));
  }
  ncclUniqueId id;
  auto bytes = ExchangeNcclUniqueId(
      rendezvous, rank, options.key_prefix, sizeof(id.internal), options.timeout,
      [&]() -> absl::StatusOr<std::string> {
        ncclUniqueId fresh;
        if (ncclResult_t r = ncclGetUniqueId(&fresh); r != ncclSuccess) {
          return absl::UnavailableError(absl::StrCat("ncclGetUniqueId: ", ncclGetErrorString(r)));
        }
        return std::string(fresh.internal, sizeof(fresh.internal));
      });
  if (!bytes.ok()) return bytes.status();
  std::copy(bytes->begin(), bytes->end(), id.internal);

  cudaStream_t stream = nullptr;
  cudaEvent_t aten_done = nullptr;
  cudaError_t e = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
  if (e != cudaSuccess) return CudaError(e, "stream");
  e = cudaEventCreateWithFlags(&aten_done, cudaEventDisableTiming);
  if (e != cudaSuccess) {
    cudaStreamDestroy(stream);
    return CudaError(e, "event");
  }
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;  // so a peer that never joins cannot hang us: poll with a deadline below
  ncclComm_t comm = nullptr;
  ncclResult_t result = ncclCommInitRankConfig(&comm, size, id, rank, &config);
  if ((result == ncclSuccess || result == ncclInProgress) && comm != nullptr) {
    result = WaitUntilReady(comm, Clock::now() + options.timeout);
  }
  if (result != ncclSuccess) {
    if (comm != nullptr) ncclCommAbort(comm);
    cudaEventDestroy(aten_done);
    cudaStreamDestroy(stream);
    return absl::UnavailableError(absl::StrCat(
        "rank ", rank, " of ", size, " could not join the NCCL group under ",
        NcclUniqueIdKey(options.key_prefix), ": ",
        result == ncclInProgress ? "timed out" : ncclGetErrorString(result)));
  }
  return std::unique_ptr<Collective>(new NcclCollective(comm, stream, aten_done, rank, size, options));
}

}  // namespace ptq
