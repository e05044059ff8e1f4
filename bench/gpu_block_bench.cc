// GPU benchmark: GPTQ and TurboBoA-shaped work on one randomly initialised Llama-2-7B-shaped block
// (hidden 4096, intermediate 11008, 32 heads of 128, N x 2048 calibration tokens, N = 128), built
// from the kernels in kernels/ and ATen's CUDA GEMMs and Cholesky factorisations. Prints one JSON
// object: seconds per phase and per layer, and the peak device memory in use. Compare it with
// ../shared/bench/plain_gptq_block.py run in the same session (docs/gpu.md).
//
//   build-gpu/gpu_block_bench [--samples N] [--bits B] [--group G] [--boa-bits B] [--small]
//
// --small shrinks the block (hidden 512, intermediate 1408, 4 heads, 8 x 256 tokens) for a quick
// check that everything runs. Needs a CUDA build against a libtorch with CUDA; elsewhere it says why
// and exits with status 2.
#include <ATen/ATen.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#if defined(PTQ_HAVE_CUDA)
#include <cuda_runtime.h>

#include "kernels/gptq_block.h"
#include "kernels/gptq_pack.h"
#include "kernels/hessian_accumulate.h"
#endif

namespace {

struct Shape {
  int64_t hidden = 4096, inter = 11008, heads = 32, head_dim = 128;
  int64_t samples = 128, seq = 2048;
  int bits = 4, boa_bits = 2;
  int64_t group = 128;
  int64_t boa_rows = 16;  // TurboBoA's N rows quantized jointly per head
};

#if defined(PTQ_HAVE_CUDA)

double Now() {
  cudaDeviceSynchronize();
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Peak of (total - free) device memory seen at the sampling points: ATen's caching allocator's
// reserve plus the CUDA context, so an upper bound on what the computation itself needed.
struct MemoryPeak {
  size_t peak = 0;
  void Sample() {
    size_t free = 0, total = 0;
    if (cudaMemGetInfo(&free, &total) == cudaSuccess && total - free > peak) peak = total - free;
  }
};
MemoryPeak g_mem;

void Check(int err, const char* what) {
  if (err != 0) {
    std::fprintf(stderr, "%s failed: %s\n", what, cudaGetErrorString(static_cast<cudaError_t>(err)));
    std::exit(1);
  }
}

// H accumulated window by window with the deterministic kernel, then scaled to (2/n) X^T X.
at::Tensor Hessian(const at::Tensor& x_bf16, int64_t windows, int64_t seq) {
  const int64_t dim = x_bf16.size(1);
  at::Tensor sum = at::zeros({dim, dim}, x_bf16.options().dtype(at::kDouble));
  for (int64_t k = 0; k < windows; ++k) {
    at::Tensor x = x_bf16.narrow(0, k * seq, seq).to(at::kFloat).contiguous();
    Check(ptq::kernels::HessianAccumulateCuda(
              {seq, dim, x.data_ptr<float>(), sum.data_ptr<double>()}, nullptr),
          "HessianAccumulateCuda");
  }
  g_mem.Sample();
  return sum * (2.0 / static_cast<double>(windows * seq));
}

// The upper Cholesky factor of (H + damp mean(diag H) I)^-1, in float64, returned as float32.
at::Tensor FactorU(at::Tensor h, double damp = 0.01) {
  h = h.clone();
  at::Tensor dead = h.diagonal() == 0;
  h.diagonal().masked_fill_(dead, 1.0);
  h.diagonal().add_(damp * h.diagonal().mean());
  at::Tensor l = at::linalg_cholesky(h, /*upper=*/false);
  at::Tensor u = at::linalg_cholesky(at::cholesky_inverse(l, /*upper=*/false), /*upper=*/true);
  return u.to(at::kFloat).contiguous();
}

struct GptqOut {
  at::Tensor q, codes, scales, zeros;
};

// GPTQ of w's rows (in place: w ends compensated) with a prepared factor: one fused kernel launch per
// lazy block of 128 columns, then one GEMM for the columns after it.
GptqOut GptqRows(at::Tensor& w, const at::Tensor& u, int bits, int64_t group) {
  const int64_t rows = w.size(0), cols = w.size(1), block = 128;
  const int64_t g = group;
  const int64_t groups = (cols + g - 1) / g;
  GptqOut out;
  out.q = at::empty_like(w);
  out.codes = at::empty({rows, cols}, w.options().dtype(at::kByte));
  out.scales = at::empty({rows, groups}, w.options());
  out.zeros = at::empty({rows, groups}, w.options());
  at::Tensor err = at::empty({rows, block}, w.options());
  for (int64_t b0 = 0; b0 < cols; b0 += block) {
    const int64_t count = std::min(block, cols - b0);
    ptq::kernels::GptqBlockArgs a;
    a.rows = rows;
    a.count = count;
    a.w = w.data_ptr<float>() + b0;
    a.ldw = cols;
    a.u = u.data_ptr<float>() + b0 * cols + b0;
    a.ldu = cols;
    a.q = out.q.data_ptr<float>() + b0;
    a.codes = out.codes.data_ptr<uint8_t>() + b0;
    a.ldq = cols;
    a.err = err.data_ptr<float>();
    a.lde = block;
    // Blocks hold whole groups (main checks 128 % group == 0), so each grid is fitted in its block.
    a.scales = out.scales.data_ptr<float>() + b0 / g;
    a.zeros = out.zeros.data_ptr<float>() + b0 / g;
    a.ldg = groups;
    a.group_cols = g;
    a.fit_grids = true;
    a.bits = bits;
    Check(ptq::kernels::GptqBlockCuda(a, nullptr), "GptqBlockCuda");
    if (b0 + count < cols) {
      at::Tensor rest = w.narrow(1, b0 + count, cols - b0 - count);
      rest.addmm_(err.narrow(1, 0, count), u.narrow(0, b0, count).narrow(1, b0 + count, cols - b0 - count),
                  /*beta=*/1.0, /*alpha=*/-1.0);
    }
  }
  return out;
}

// qweight: codes [out, in] packed along the input dimension.
at::Tensor Pack(const at::Tensor& codes, int bits) {
  at::Tensor kn = codes.t().contiguous();  // [in, out]
  at::Tensor packed = at::empty({kn.size(0) * bits / 32, kn.size(1)}, codes.options().dtype(at::kInt));
  Check(ptq::kernels::GptqPackCuda({kn.size(0), kn.size(1), kn.data_ptr<uint8_t>(), bits,
                                    packed.data_ptr<int32_t>()},
                                   nullptr),
        "GptqPackCuda");
  return packed;
}

std::string Json(const std::map<std::string, double>& m) {
  std::string s = "{";
  for (const auto& [k, v] : m) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.4f", v);
    s += (s.size() > 1 ? ", \"" : "\"") + k + "\": " + buf;
  }
  return s + "}";
}

int Run(const Shape& s) {
  if (!at::hasCUDA()) {
    std::fprintf(stderr, "gpu_block_bench: this libtorch has no CUDA (Debian's libtorch is CPU-only); "
                         "build against PyTorch's libtorch on the GPU machine (docs/gpu.md)\n");
    return 2;
  }
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::fprintf(stderr, "gpu_block_bench: no CUDA device\n");
    return 2;
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  const auto cuda = at::TensorOptions().device(at::kCUDA).dtype(at::kFloat);
  at::manual_seed(0);
  std::map<std::string, double> top;
  std::map<std::string, std::map<std::string, double>> per_layer;

  // Statistics. The attention input's H from all windows; the down projection's from 1/8 of them,
  // its time scaled by 8, as plain_gptq_block.py does.
  const int64_t windows = s.samples;
  at::Tensor x = at::randn({windows * s.seq, s.hidden}, cuda.dtype(at::kBFloat16));
  double t = Now();
  at::Tensor h_in = Hessian(x, windows, s.seq);
  top["hessian_hidden_s"] = Now() - t;
  x = at::Tensor();
  const int64_t windows8 = std::max<int64_t>(1, windows / 8);
  at::Tensor m = at::randn({windows8 * s.seq, s.inter}, cuda.dtype(at::kBFloat16));
  t = Now();
  at::Tensor h_mlp = Hessian(m, windows8, s.seq);
  top["hessian_inter_s_x8"] = (Now() - t) * static_cast<double>(windows) / static_cast<double>(windows8);
  m = at::Tensor();
  // The same statistics as one float32 GEMM per window (what the plain PyTorch code does), for scale.
  {
    at::Tensor xs = at::randn({s.seq, s.hidden}, cuda);
    at::Tensor hs = at::zeros({s.hidden, s.hidden}, cuda);
    t = Now();
    for (int64_t k = 0; k < windows; ++k) hs.addmm_(xs.t(), xs);
    top["hessian_hidden_aten_fp32_gemm_s"] = Now() - t;
  }

  struct Layer {
    const char* name;
    int64_t rows, cols;
    const at::Tensor* h;
  };
  const int64_t attn = s.heads * s.head_dim;
  const std::vector<Layer> layers = {{"q", attn, s.hidden, &h_in},   {"k", attn, s.hidden, &h_in},
                                     {"v", attn, s.hidden, &h_in},   {"o", s.hidden, attn, &h_in},
                                     {"gate", s.inter, s.hidden, &h_in}, {"up", s.inter, s.hidden, &h_in},
                                     {"down", s.hidden, s.inter, &h_mlp}};

  // GPTQ: factor once per distinct H (q, k, v, gate, up share the attention/MLP input's), as a
  // pipeline does; the factorisations are timed as their own phase.
  t = Now();
  at::Tensor u_in = FactorU(h_in);
  at::Tensor u_mlp = FactorU(h_mlp);
  top["gptq_factor_s"] = Now() - t;
  {
    // Warm-up: cuBLAS/cuSOLVER handles and kernel loading.
    at::Tensor w = at::randn({256, 256}, cuda);
    GptqRows(w, FactorU(at::eye(256, cuda.dtype(at::kDouble))), s.bits, s.group);
  }
  double gptq_total = top["gptq_factor_s"];
  for (const Layer& l : layers) {
    at::Tensor w = at::randn({l.rows, l.cols}, cuda) * 0.02;
    const at::Tensor& u = l.h == &h_mlp ? u_mlp : u_in;
    t = Now();
    GptqOut q = GptqRows(w, u, s.bits, s.group);
    const double loop = Now() - t;
    t = Now();
    at::Tensor packed = Pack(q.codes, s.bits);
    const double pack = Now() - t;
    per_layer["gptq_column_loop_s"][l.name] = loop;
    per_layer["gptq_pack_s"][l.name] = pack;
    gptq_total += loop + pack;
    g_mem.Sample();
  }
  top["gptq_block_s"] = gptq_total;
  top["gptq_block_with_statistics_s"] =
      gptq_total + top["hessian_hidden_s"] + top["hessian_inter_s_x8"];

  // TurboBoA-shaped work at boa_bits: for q and k, each head's rows are taken boa_rows at a time
  // (all heads' row blocks together in one GPTQ pass over the shared H_in), and after each step the
  // head's remaining rows absorb the step's error through the head's output factor (a batched GEMM).
  // v additionally has one H_in per head (BoA's "block_v"): one factorisation and GPTQ pass per head.
  // o and the MLP are GPTQ with H_out = I.
  t = Now();
  at::Tensor hout = at::randn({s.heads, s.head_dim, 2 * s.head_dim}, cuda.dtype(at::kDouble));
  hout = at::matmul(hout, hout.transpose(1, 2)) / static_cast<double>(2 * s.head_dim);
  hout.diagonal(0, 1, 2).add_(0.01);
  at::Tensor u_out =
      at::linalg_cholesky(at::cholesky_inverse(at::linalg_cholesky(hout, false), false), true)
          .to(at::kFloat);
  top["boa_head_factor_s"] = Now() - t;
  double boa_total = top["gptq_factor_s"] + top["boa_head_factor_s"];
  for (const Layer& l : layers) {
    at::Tensor w = at::randn({l.rows, l.cols}, cuda) * 0.02;
    const std::string name = l.name;
    t = Now();
    if (name == "q" || name == "k" || name == "v") {
      at::Tensor wh = w.view({s.heads, s.head_dim, l.cols});
      std::vector<at::Tensor> u_v;  // v: one H_in per head (random here; the cost is the point)
      if (name == "v") {
        for (int64_t h = 0; h < s.heads; ++h) {
          at::Tensor hh = h_in.clone();
          hh.diagonal().add_(1e-3 * static_cast<double>(h + 1));
          u_v.push_back(FactorU(hh));
        }
      }
      for (int64_t r1 = 0; r1 < s.head_dim; r1 += s.boa_rows) {
        const int64_t n = std::min(s.boa_rows, s.head_dim - r1);
        at::Tensor rows = wh.narrow(1, r1, n).reshape({s.heads * n, l.cols}).contiguous();
        at::Tensor orig = rows.clone();
        at::Tensor qrows;
        if (name == "v") {
          qrows = at::empty_like(rows);
          for (int64_t h = 0; h < s.heads; ++h) {
            at::Tensor part = rows.narrow(0, h * n, n);  // contiguous: whole rows
            qrows.narrow(0, h * n, n).copy_(GptqRows(part, u_v[h], s.boa_bits, s.group).q);
          }
        } else {
          qrows = GptqRows(rows, u_in, s.boa_bits, s.group).q;
        }
        wh.narrow(1, r1, n).copy_(qrows.view({s.heads, n, l.cols}));
        if (r1 + n < s.head_dim) {
          // W_{r2:} -= U_out^T[r2:, r1:r2] (U_out[r1:r2, r1:r2])^-T E, E = W_rows - Q_rows, per head.
          at::Tensor e = (orig - qrows).view({s.heads, n, l.cols});
          at::Tensor ub = u_out.narrow(1, r1, n).narrow(2, r1, n);               // [heads, n, n]
          at::Tensor ur = u_out.narrow(1, r1, n).narrow(2, r1 + n, s.head_dim - r1 - n);  // [heads, n, rest]
          at::Tensor solved = at::linalg_solve_triangular(ub.transpose(1, 2), e, /*upper=*/false);
          wh.narrow(1, r1 + n, s.head_dim - r1 - n).sub_(at::matmul(ur.transpose(1, 2), solved));
        }
      }
    } else {
      GptqRows(w, l.h == &h_mlp ? u_mlp : u_in, s.boa_bits, s.group);
    }
    per_layer["turboboa_s"][l.name] = Now() - t;
    boa_total += per_layer["turboboa_s"][l.name];
    g_mem.Sample();
  }
  top["turboboa_block_s"] = boa_total;
  top["turboboa_over_gptq"] = boa_total / gptq_total;
  top["peak_device_used_gib"] = static_cast<double>(g_mem.peak) / (1u << 30);
  top["projected_llama2_7b_32_blocks_gptq_s_without_forwards"] =
      32 * top["gptq_block_with_statistics_s"];

  std::printf("{\"device\": \"%s\", \"tokens\": %lld, \"bits\": %d, \"group\": %lld, "
              "\"boa_bits\": %d, \"boa_rows\": %lld,\n \"phases\": %s",
              prop.name, static_cast<long long>(windows * s.seq), s.bits,
              static_cast<long long>(s.group), s.boa_bits, static_cast<long long>(s.boa_rows),
              Json(top).c_str());
  for (const auto& [k, v] : per_layer) std::printf(",\n \"%s\": %s", k.c_str(), Json(v).c_str());
  std::printf("}\n");
  return 0;
}

#endif  // PTQ_HAVE_CUDA

}  // namespace

int main(int argc, char** argv) {
  Shape s;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> int64_t {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return std::atoll(argv[++i]);
    };
    if (a == "--samples") s.samples = next();
    else if (a == "--bits") s.bits = static_cast<int>(next());
    else if (a == "--boa-bits") s.boa_bits = static_cast<int>(next());
    else if (a == "--group") s.group = next();
    else if (a == "--small") { s.hidden = 512; s.inter = 1408; s.heads = 4; s.samples = 8; s.seq = 256; }
    else {
      std::fprintf(stderr, "usage: %s [--samples N] [--bits B] [--group G] [--boa-bits B] [--small]\n",
                   argv[0]);
      return 2;
    }
  }
  if (s.group < 1 || 128 % s.group != 0) {
    std::fprintf(stderr, "--group must divide the lazy block of 128 columns\n");
    return 2;
  }
#if defined(PTQ_HAVE_CUDA)
  return Run(s);
#else
  (void)s;
  std::fprintf(stderr, "gpu_block_bench: built without CUDA (no toolkit found, or -DPTQ_WITH_CUDA=OFF)\n");
  return 2;
#endif
}
