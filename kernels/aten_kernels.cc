#include "kernels/aten_kernels.h"

#include <ATen/ATen.h>

#include <initializer_list>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "kernels/gptq_block.h"
#include "kernels/gptq_pack.h"
#include "kernels/hessian_accumulate.h"
#include "kernels/quant_dequant.h"

#if defined(PTQ_HAVE_CUDA) && defined(PTQ_TORCH_CUDA)
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace ptq::kernels {
namespace {

// The CUDA launcher of a kernel, or nullptr where the kernels were not built.
#if defined(PTQ_HAVE_CUDA)
#define PTQ_CUDA_LAUNCHER(f) (&f)
#else
#define PTQ_CUDA_LAUNCHER(f) nullptr
#endif

std::string Describe(const at::Tensor& t) {
  if (!t.defined()) return "an undefined tensor";
  return absl::StrCat(std::string(c10::toString(t.scalar_type())), " ", c10::str(t.sizes()), " on ",
                      t.device().str());
}

absl::Status Bad(const char* what, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat(what, ": ", why));
}

// Every defined tensor on `device`.
absl::Status SameDevice(const char* what, const at::Device& device,
                        std::initializer_list<const at::Tensor*> tensors) {
  for (const at::Tensor* t : tensors) {
    if (t->defined() && t->device() != device) {
      return Bad(what, absl::StrCat("tensors on two devices: ", device.str(), " and ", Describe(*t)));
    }
  }
  return absl::OkStatus();
}

// A 2-D tensor of `type` and shape [rows, cols] whose last dimension is contiguous; its row stride
// (the leading dimension) goes to *ld.
absl::Status Matrix(const char* what, const char* name, const at::Tensor& t, at::ScalarType type,
                    int64_t rows, int64_t cols, int64_t* ld) {
  if (!t.defined() || t.dim() != 2 || t.scalar_type() != type || t.size(0) != rows ||
      t.size(1) != cols) {
    return Bad(what, absl::StrCat(name, " must be ", std::string(c10::toString(type)), " [", rows,
                                  ", ", cols, "], got ", Describe(t)));
  }
  if (cols > 1 && t.stride(1) != 1) {
    return Bad(what, absl::StrCat(name, "'s columns must be contiguous (stride ", t.stride(1), ")"));
  }
  // A single row's stride says nothing; any leading dimension >= cols addresses it.
  *ld = rows > 1 ? t.stride(0) : cols;
  if (*ld < cols) return Bad(what, absl::StrCat(name, " has rows that overlap"));
  return absl::OkStatus();
}

// Whether tensors on `device` can go to a kernel here; checked before any data pointer is taken.
absl::Status Supported(const char* what, const at::Device& device) {
  if (device.is_cpu()) return absl::OkStatus();
  if (!device.is_cuda()) {
    return Bad(what, absl::StrCat("tensors on ", device.str(), ": only CPU and CUDA are supported"));
  }
#if defined(PTQ_HAVE_CUDA) && defined(PTQ_TORCH_CUDA)
  return absl::OkStatus();  // a CUDA tensor exists, so libtorch has CUDA and sees the device
#else
  return absl::FailedPreconditionError(
      absl::StrCat(what, ": tensors on ", device.str(), " but ", CudaKernelsUnavailableReason()));
#endif
}

// Runs the reference for CPU tensors and the launcher on ATen's current stream for CUDA tensors
// (after Supported said yes).
template <typename Args>
absl::Status Run(const at::Device& device, const Args& args, absl::Status (*ref)(const Args&),
                 std::type_identity_t<absl::Status (*)(const Args&, CudaStream)> cuda) {
  if (device.is_cpu()) return ref(args);
#if defined(PTQ_HAVE_CUDA) && defined(PTQ_TORCH_CUDA)
  const c10::cuda::CUDAGuard guard(device);
  return cuda(args, c10::cuda::getCurrentCUDAStream(device.index()).stream());
#else
  (void)cuda;
  return absl::InternalError("unreachable: Supported() refuses this device");
#endif
}

}  // namespace

std::string CudaKernelsUnavailableReason() {
#if !defined(PTQ_HAVE_CUDA)
  return "built without the CUDA kernels (no CUDA toolkit found, or -DPTQ_WITH_CUDA=OFF)";
#elif !defined(PTQ_TORCH_CUDA)
  return "built against a libtorch without CUDA (Debian's is CPU-only; build against PyTorch's "
         "libtorch, docs/gpu.md)";
#else
  if (!at::hasCUDA()) return "libtorch sees no CUDA device";
  return "";
#endif
}

absl::Status HessianAccumulateAten(const at::Tensor& x, const at::Tensor& sum) {
  constexpr const char* kWhat = "HessianAccumulateAten";
  if (!x.defined() || x.dim() < 1 || !at::isFloatingType(x.scalar_type())) {
    return Bad(kWhat, absl::StrCat("x must be a floating tensor [..., dim], got ", Describe(x)));
  }
  const int64_t dim = x.size(-1);
  if (!sum.defined() || sum.scalar_type() != at::kDouble || sum.dim() != 2 || sum.size(0) != dim ||
      sum.size(1) != dim || !sum.is_contiguous()) {
    return Bad(kWhat, absl::StrCat("sum must be a contiguous float64 [", dim, ", ", dim, "], got ",
                                   Describe(sum)));
  }
  if (auto s = SameDevice(kWhat, x.device(), {&sum}); !s.ok()) return s;
  if (auto s = Supported(kWhat, x.device()); !s.ok()) return s;
  // A converted or compacted copy is made on the current stream and freed after the launch is
  // queued there: the caching allocator does not hand it out again before the stream gets there.
  const at::Tensor flat = x.reshape({-1, dim}).to(at::kFloat).contiguous();
  HessianAccumulateArgs a{flat.size(0), dim, flat.data_ptr<float>(), sum.data_ptr<double>()};
  return Run(x.device(), a, &HessianAccumulateRef, PTQ_CUDA_LAUNCHER(HessianAccumulateCuda));
}

absl::Status GptqBlockAten(const GptqBlockTensors& t, const GptqBlockSettings& s) {
  constexpr const char* kWhat = "GptqBlockAten";
  if (!t.w.defined() || t.w.dim() != 2) {
    return Bad(kWhat, absl::StrCat("w must be float32 [rows, count], got ", Describe(t.w)));
  }
  const int64_t rows = t.w.size(0), count = t.w.size(1);
  if (count < 1 || count > kGptqMaxBlockColumns) {
    return Bad(kWhat, absl::StrCat("a block holds 1..", kGptqMaxBlockColumns, " columns, not ", count));
  }
  const int64_t gc = s.group_cols > 0 ? std::min(s.group_cols, count) : count;
  const int64_t groups = (count + gc - 1) / gc;
  GptqBlockArgs a;
  a.rows = rows;
  a.count = count;
  int64_t ldc = 0, ldz = 0;
  for (auto st : {Matrix(kWhat, "w", t.w, at::kFloat, rows, count, &a.ldw),
                  Matrix(kWhat, "u", t.u, at::kFloat, count, count, &a.ldu),
                  Matrix(kWhat, "q", t.q, at::kFloat, rows, count, &a.ldq),
                  Matrix(kWhat, "err", t.err, at::kFloat, rows, count, &a.lde),
                  Matrix(kWhat, "scales", t.scales, at::kFloat, rows, groups, &a.ldg),
                  Matrix(kWhat, "zeros", t.zeros, at::kFloat, rows, groups, &ldz)}) {
    if (!st.ok()) return st;
  }
  if (t.codes.defined()) {
    if (auto st = Matrix(kWhat, "codes", t.codes, at::kByte, rows, count, &ldc); !st.ok()) return st;
    if (ldc != a.ldq) return Bad(kWhat, "codes and q must have the same row stride");
  }
  if (ldz != a.ldg) return Bad(kWhat, "scales and zeros must have the same row stride");
  if (auto st = SameDevice(kWhat, t.w.device(), {&t.u, &t.q, &t.codes, &t.err, &t.scales, &t.zeros});
      !st.ok()) {
    return st;
  }
  if (auto st = Supported(kWhat, t.w.device()); !st.ok()) return st;
  a.w = t.w.data_ptr<float>();
  a.u = t.u.data_ptr<float>();
  a.q = t.q.data_ptr<float>();
  a.codes = t.codes.defined() ? t.codes.data_ptr<uint8_t>() : nullptr;
  a.err = t.err.data_ptr<float>();
  a.scales = t.scales.data_ptr<float>();
  a.zeros = t.zeros.data_ptr<float>();
  a.group_cols = s.group_cols;
  a.fit_grids = s.fit_grids;
  a.bits = s.bits;
  a.sym = s.sym;
  a.min_zero = s.min_zero;
  a.fp16_scales = s.fp16_scales;
  return Run(t.w.device(), a, &GptqBlockRef, PTQ_CUDA_LAUNCHER(GptqBlockCuda));
}

absl::StatusOr<GptqLoopResult> GptqColumnLoopAten(const at::Tensor& w, const at::Tensor& u,
                                                  int64_t block, const GptqBlockSettings& s,
                                                  const at::Tensor& fixed_scales,
                                                  const at::Tensor& fixed_zeros) {
  constexpr const char* kWhat = "GptqColumnLoopAten";
  if (!w.defined() || w.dim() != 2 || w.scalar_type() != at::kFloat || !w.is_contiguous()) {
    return Bad(kWhat, absl::StrCat("w must be contiguous float32 [rows, cols], got ", Describe(w)));
  }
  const int64_t rows = w.size(0), cols = w.size(1);
  int64_t ldu = 0;
  if (auto st = Matrix(kWhat, "u", u, at::kFloat, cols, cols, &ldu); !st.ok()) return st;
  if (block < 1 || block > kGptqMaxBlockColumns) {
    return Bad(kWhat, absl::StrCat("block must be 1..", kGptqMaxBlockColumns, ", not ", block));
  }
  const bool grouped = s.group_cols > 0;
  if (grouped && block % s.group_cols != 0 && cols > block) {
    return Bad(kWhat, absl::StrCat("block ", block, " does not hold whole groups of ", s.group_cols));
  }
  if (s.fit_grids && !grouped) {
    return Bad(kWhat, "fit_grids needs group_cols > 0: per-row grids are fitted before the loop");
  }
  const int64_t groups = grouped ? (cols + s.group_cols - 1) / s.group_cols : 1;
  const at::TensorOptions f32 = w.options().dtype(at::kFloat);
  GptqLoopResult out;
  if (s.fit_grids) {
    out.scales = at::empty({rows, groups}, f32);
    out.zeros = at::empty({rows, groups}, f32);
  } else {
    int64_t ld = 0;
    for (auto st : {Matrix(kWhat, "fixed_scales", fixed_scales, at::kFloat, rows, groups, &ld),
                    Matrix(kWhat, "fixed_zeros", fixed_zeros, at::kFloat, rows, groups, &ld)}) {
      if (!st.ok()) return st;
    }
    out.scales = fixed_scales;
    out.zeros = fixed_zeros;
  }
  if (auto st = SameDevice(kWhat, w.device(), {&u, &out.scales, &out.zeros}); !st.ok()) return st;
  if (auto st = Supported(kWhat, w.device()); !st.ok()) return st;
  out.q = at::empty({rows, cols}, f32);
  out.codes = at::empty({rows, cols}, w.options().dtype(at::kByte));
  const at::Tensor err = at::empty({rows, std::min(block, cols)}, f32);
  for (int64_t b0 = 0; b0 < cols; b0 += block) {
    const int64_t count = std::min(block, cols - b0);
    GptqBlockTensors t;
    t.w = w.narrow(1, b0, count);
    t.u = u.narrow(0, b0, count).narrow(1, b0, count);
    t.q = out.q.narrow(1, b0, count);
    t.codes = out.codes.narrow(1, b0, count);
    t.err = err.narrow(1, 0, count);
    if (grouped) {
      const int64_t g0 = b0 / s.group_cols;
      const int64_t ng = (count + s.group_cols - 1) / s.group_cols;
      t.scales = out.scales.narrow(1, g0, ng);
      t.zeros = out.zeros.narrow(1, g0, ng);
    } else {
      t.scales = out.scales;  // [rows, 1]: the row's one grid for every block
      t.zeros = out.zeros;
    }
    if (auto st = GptqBlockAten(t, s); !st.ok()) return st;
    if (b0 + count < cols) {
      at::Tensor rest = w.narrow(1, b0 + count, cols - b0 - count);
      const at::Tensor ur = u.narrow(0, b0, count).narrow(1, b0 + count, cols - b0 - count);
      if (w.is_cuda()) {
        rest.addmm_(t.err, ur, /*beta=*/1.0, /*alpha=*/-1.0);  // fused, no temporary
      } else {
        rest.sub_(at::matmul(t.err, ur));  // as GptqQuantizeWithFactor's CPU loop
      }
    }
  }
  return out;
}

absl::StatusOr<QuantDequantResult> QuantDequantAten(const at::Tensor& w, const at::Tensor& scales,
                                                    const at::Tensor& zeros, const at::Tensor& g_idx,
                                                    int64_t group_size, int bits) {
  constexpr const char* kWhat = "QuantDequantAten";
  if (!w.defined() || w.dim() != 2 || w.scalar_type() != at::kFloat) {
    return Bad(kWhat, absl::StrCat("w must be float32 [rows, cols], got ", Describe(w)));
  }
  const int64_t rows = w.size(0), cols = w.size(1);
  if (!scales.defined() || scales.dim() != 2) {
    return Bad(kWhat, absl::StrCat("scales must be float32 [rows, groups], got ", Describe(scales)));
  }
  const int64_t groups = scales.size(1);
  int64_t ld = 0;
  for (auto st : {Matrix(kWhat, "scales", scales, at::kFloat, rows, groups, &ld),
                  Matrix(kWhat, "zeros", zeros, at::kFloat, rows, groups, &ld)}) {
    if (!st.ok()) return st;
  }
  if (g_idx.defined() &&
      (g_idx.dim() != 1 || g_idx.size(0) != cols || g_idx.scalar_type() != at::kInt)) {
    return Bad(kWhat, absl::StrCat("g_idx must be int32 [", cols, "], got ", Describe(g_idx)));
  }
  if (auto st = SameDevice(kWhat, w.device(), {&scales, &zeros, &g_idx}); !st.ok()) return st;
  if (auto st = Supported(kWhat, w.device()); !st.ok()) return st;
  if (g_idx.defined() && cols > 0) {
    const int64_t lo = g_idx.min().item<int64_t>(), hi = g_idx.max().item<int64_t>();
    if (lo < 0 || hi >= groups) {
      return Bad(kWhat, absl::StrCat("g_idx holds groups ", lo, "..", hi, " of ", groups));
    }
  }
  const at::Tensor wc = w.contiguous(), sc = scales.contiguous(), zc = zeros.contiguous();
  const at::Tensor gc = g_idx.defined() ? g_idx.contiguous() : at::Tensor();
  QuantDequantResult out;
  out.codes = at::empty({rows, cols}, w.options().dtype(at::kByte));
  out.deq = at::empty({rows, cols}, w.options().dtype(at::kFloat));
  QuantDequantArgs a;
  a.rows = rows;
  a.cols = cols;
  a.w = wc.data_ptr<float>();
  a.scales = sc.data_ptr<float>();
  a.zeros = zc.data_ptr<float>();
  a.groups = groups;
  a.group_size = group_size;
  a.g_idx = gc.defined() ? gc.data_ptr<int32_t>() : nullptr;
  a.bits = bits;
  a.codes = out.codes.data_ptr<uint8_t>();
  a.deq = out.deq.data_ptr<float>();
  if (auto st = Run(w.device(), a, &QuantDequantRef, PTQ_CUDA_LAUNCHER(QuantDequantCuda));
      !st.ok()) {
    return st;
  }
  return out;
}

absl::StatusOr<at::Tensor> GptqPackAten(const at::Tensor& codes, int bits) {
  constexpr const char* kWhat = "GptqPackAten";
  if (!codes.defined() || codes.dim() != 2 || codes.scalar_type() != at::kByte) {
    return Bad(kWhat, absl::StrCat("codes must be uint8 [K, N], got ", Describe(codes)));
  }
  if (auto st = Supported(kWhat, codes.device()); !st.ok()) return st;
  const at::Tensor c = codes.contiguous();
  GptqPackArgs a{c.size(0), c.size(1), c.data_ptr<uint8_t>(), bits, nullptr};
  if (bits != 2 && bits != 3 && bits != 4 && bits != 8) return Bad(kWhat, "bits must be 2, 3, 4 or 8");
  if ((a.rows * bits) % 32 != 0) {
    return Bad(kWhat, absl::StrCat(a.rows, " codes per column at ", bits, " bits do not fill whole words"));
  }
  if (c.numel() > 0) {
    const int64_t top = c.max().item<int64_t>();
    if (top >> bits) return Bad(kWhat, absl::StrCat("code ", top, " does not fit ", bits, " bits"));
  }
  at::Tensor packed = at::empty({a.rows * bits / 32, a.cols}, c.options().dtype(at::kInt));
  a.packed = packed.data_ptr<int32_t>();
  if (auto st = Run(c.device(), a, &GptqPackRef, PTQ_CUDA_LAUNCHER(GptqPackCuda)); !st.ok()) {
    return st;
  }
  return packed;
}

}  // namespace ptq::kernels
