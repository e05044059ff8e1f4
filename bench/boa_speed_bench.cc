// Quantizer speed of GPTQ, BoA (one row per step) and TurboBoA (N rows per step) on one attention
// projection with random statistics, on the CPU: the question the papers answer with "TurboBoA is
// several times faster than BoA". BoA runs GPTQ's column loop once per row of a head, TurboBoA once
// per N rows, so the ratio grows with head_dim. Prints one JSON line per method: seconds, and the
// Kronecker loss tr(dW H_in dW^T H_out) summed over heads (what BoA and TurboBoA minimise; GPTQ
// ignores H_out). A first line times what all three share: the damped Cholesky factor of H_in^-1
// (PrepareGptq), which dominates at in = 4096 on a CPU; subtract it to compare the loops.
// Two more lines time stage 2 of the scale optimisation alone with --refine-iters sweeps:
// "turboboa_refine" (RefineGroupScalesKronecker on TurboBoA's result, one (row, group) step at a
// time) and "gptq_refine" (RefineGroupScales on GPTQ's, all rows of a group at once), each with its
// objective afterwards (Kronecker loss, resp. tr(dW H_in dW^T)).
//
//   build/boa_speed_bench [--shape small|7b] [--heads H] [--bits B] [--group G] [--threads T]
//                         [--joint-rows N] [--repeats R] [--refine-iters K]
//
// small: the small demo model's q_proj (in 512, head_dim 64, 8 heads);
// 7b:    a Llama-2-7B q_proj's first heads (in 4096, head_dim 128; 2 heads unless --heads).
// Statistics: H_in from 4 * in Gaussian inputs with a decaying spectrum (real activations are far
// from isotropic), H_out per head from 512 random keys.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/quant/boa_quantizer.h"
#include "core/quant/gptq_quantizer.h"
#include "core/quant/group_scale_optimizer.h"

namespace {

using ptq::BoaOptions;
using ptq::BoaQuantize;
using ptq::GptqOptions;
using ptq::GptqQuantize;
using ptq::KroneckerLoss;
using ptq::QuantizedLinear;

struct Args {
  std::string shape = "small";
  int64_t heads = -1;
  int bits = 2;
  int64_t group = 128;
  int threads = 1;
  int64_t joint_rows = 16;
  int repeats = 1;
  int refine_iters = 2;  // 0: no refinement lines
};

[[noreturn]] void Usage(const char* why) {
  std::fprintf(stderr,
               "%s\nusage: boa_speed_bench [--shape small|7b] [--heads H] [--bits B] [--group G] "
               "[--threads T] [--joint-rows N] [--repeats R] [--refine-iters K]\n",
               why);
  std::exit(2);
}

Args Parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) Usage(("missing value after " + flag).c_str());
    const char* v = argv[++i];
    if (flag == "--shape") a.shape = v;
    else if (flag == "--heads") a.heads = std::atoll(v);
    else if (flag == "--bits") a.bits = std::atoi(v);
    else if (flag == "--group") a.group = std::atoll(v);
    else if (flag == "--threads") a.threads = std::atoi(v);
    else if (flag == "--joint-rows") a.joint_rows = std::atoll(v);
    else if (flag == "--repeats") a.repeats = std::atoi(v);
    else if (flag == "--refine-iters") a.refine_iters = std::atoi(v);
    else Usage(("unknown flag " + flag).c_str());
  }
  if (a.shape != "small" && a.shape != "7b") Usage("--shape must be small or 7b");
  if (a.bits < 2 || a.bits > 8 || a.threads < 1 || a.joint_rows < 1 || a.repeats < 1 ||
      a.refine_iters < 0) {
    Usage("--bits must be 2..8; --threads, --joint-rows and --repeats at least 1; --refine-iters >= 0");
  }
  return a;
}

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
// Processor time of the whole process: on a shared machine less inflated by other jobs than the
// wall clock (run with OPENBLAS_NUM_THREADS=1 so that it counts the one thread doing the work).
double CpuNow() { return static_cast<double>(std::clock()) / CLOCKS_PER_SEC; }

// (2/n) X^T X of n Gaussian rows whose i-th coordinate has scale 1/sqrt(1 + i / 16).
at::Tensor InputHessian(int64_t in) {
  const int64_t n = 4 * in;
  at::Tensor scale = (1.0 + at::arange(in, at::kFloat) / 16.0).rsqrt();
  at::Tensor x = at::randn({n, in}) * scale;
  return at::matmul(x.t(), x) * (2.0 / static_cast<double>(n));
}

// The refinements' loss, whether they return it as a number or as a tensor on the device (so the
// bench builds against either, to compare versions).
double Number(double x) { return x; }
double Number(const at::Tensor& x) { return x.item<double>(); }

}  // namespace

int main(int argc, char** argv) {
  const Args args = Parse(argc, argv);
  at::set_num_threads(args.threads);
  at::manual_seed(0);
  const bool big = args.shape == "7b";
  const int64_t in = big ? 4096 : 512, head_dim = big ? 128 : 64;
  const int64_t heads = args.heads > 0 ? args.heads : (big ? 2 : 8);

  at::Tensor weight = at::randn({heads * head_dim, in}) * 0.02;
  at::Tensor h_in = InputHessian(in);
  std::vector<at::Tensor> h_out;
  for (int64_t h = 0; h < heads; ++h) {
    at::Tensor keys = at::randn({512, head_dim});
    h_out.push_back(at::matmul(keys.t(), keys) / 512.0);
  }
  GptqOptions gptq;
  gptq.grid.bits = args.bits;
  gptq.group_size = args.group;

  {
    const double t0 = Now();
    absl::StatusOr<ptq::GptqFactor> factor = ptq::PrepareGptq(h_in, gptq, "factor");
    if (!factor.ok()) {
      std::fprintf(stderr, "factor failed: %s\n", factor.status().ToString().c_str());
      return 1;
    }
    std::printf("{\"shape\":\"%s\",\"in\":%lld,\"threads\":%d,\"method\":\"factor\",\"seconds\":%.4f}\n",
                args.shape.c_str(), static_cast<long long>(in), args.threads, Now() - t0);
  }
  struct Method {
    const char* name;
    int64_t joint_rows;  // 0: plain GPTQ
  };
  const std::vector<Method> methods = {{"gptq", 0}, {"boa", 1}, {"turboboa", args.joint_rows}};
  QuantizedLinear gptq_q, turbo_q;
  for (const Method& m : methods) {
    double best = 1e30;
    QuantizedLinear q;
    for (int r = 0; r < args.repeats; ++r) {
      const double t0 = Now();
      absl::StatusOr<QuantizedLinear> result =
          m.joint_rows == 0
              ? GptqQuantize(weight, h_in, gptq, m.name)
              : BoaQuantize(weight, h_in, h_out, BoaOptions{gptq, m.joint_rows, 0.01}, m.name);
      const double seconds = Now() - t0;
      if (!result.ok()) {
        std::fprintf(stderr, "%s failed: %s\n", m.name, result.status().ToString().c_str());
        return 1;
      }
      if (seconds < best) best = seconds;
      q = std::move(*result);
    }
    std::printf(
        "{\"shape\":\"%s\",\"in\":%lld,\"head_dim\":%lld,\"heads\":%lld,\"bits\":%d,\"group\":%lld,"
        "\"threads\":%d,\"method\":\"%s\",\"joint_rows\":%lld,\"seconds\":%.4f,"
        "\"kronecker_loss\":%.6g}\n",
        args.shape.c_str(), static_cast<long long>(in), static_cast<long long>(head_dim),
        static_cast<long long>(heads), args.bits, static_cast<long long>(args.group), args.threads,
        m.name, static_cast<long long>(m.joint_rows), best,
        KroneckerLoss(weight, q.weight, h_in, h_out));
    std::fflush(stdout);
    if (m.joint_rows == 0) gptq_q = std::move(q);
    if (m.joint_rows == args.joint_rows && std::strcmp(m.name, "turboboa") == 0) turbo_q = std::move(q);
  }
  for (const char* name : {"turboboa_refine", "gptq_refine"}) {
    if (args.refine_iters == 0) break;
    const bool kronecker = std::strcmp(name, "turboboa_refine") == 0;
    double best = 1e30, best_cpu = 1e30, loss = 0;
    for (int r = 0; r < args.repeats; ++r) {
      QuantizedLinear q = kronecker ? turbo_q : gptq_q;
      q.scales = q.scales.clone();
      const double t0 = Now(), c0 = CpuNow();
      loss = kronecker ? Number(ptq::RefineGroupScalesKronecker(q, weight, h_in, h_out, args.refine_iters))
                       : Number(ptq::RefineGroupScales(q, weight, h_in, args.refine_iters));
      best = std::min(best, Now() - t0);
      best_cpu = std::min(best_cpu, CpuNow() - c0);
    }
    std::printf(
        "{\"shape\":\"%s\",\"in\":%lld,\"head_dim\":%lld,\"heads\":%lld,\"bits\":%d,\"group\":%lld,"
        "\"threads\":%d,\"method\":\"%s\",\"refine_iters\":%d,\"seconds\":%.4f,\"cpu_seconds\":%.4f,"
        "\"loss\":%.9g}\n",
        args.shape.c_str(), static_cast<long long>(in), static_cast<long long>(head_dim),
        static_cast<long long>(heads), args.bits, static_cast<long long>(args.group), args.threads,
        name, args.refine_iters, best, best_cpu, loss);
    std::fflush(stdout);
  }
  return 0;
}
