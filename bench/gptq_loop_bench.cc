// GPTQ's column loop: the old scalar loop (tests/core/quant/gptq_scalar_reference.h, host pointers,
// one row at a time) against the device-generic ATen path (GptqQuantizeWithFactor), on the CPU, on
// one transformer block's layer shapes of a model (default: the small demo model), random weights
// and a correlated positive-definite Hessian. The factor (PrepareGptq) is shared and not timed.
// Old and new run alternately, `--repeats` times each; the best time of each is kept, and the
// outputs are checked equal. Times are CPU seconds of the process (what the other jobs on a shared
// machine disturb least); wall seconds follow for reference.
//
//   build/gptq_loop_bench [--model DIR] [--rows-per-call N] [--threads T] [--repeats R]
//                         [--only SETTING]
//
// --rows-per-call: rows per call, 128 as the pipeline's row units (core/quant/layer_shard), 0 for
// whole layers. Prints one line per layer and setting, and each setting's block total and ratio.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>
#include <vector>

#include "common/model_config.h"
#include "core/quant/gptq_quantizer.h"
#include "tests/core/quant/gptq_scalar_reference.h"

namespace {

struct Args {
  std::string model = "../shared/models/small-llama-bytes";
  int64_t rows_per_call = 128;
  int threads = 1;
  int repeats = 3;
  std::string only;  // run the settings whose name contains this
};

[[noreturn]] void Usage(const char* why) {
  std::fprintf(stderr,
               "%s\nusage: gptq_loop_bench [--model DIR] [--rows-per-call N] [--threads T] "
               "[--repeats R] [--only SETTING]\n",
               why);
  std::exit(2);
}

Args Parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) Usage(("missing value after " + flag).c_str());
    const char* v = argv[++i];
    if (flag == "--model") a.model = v;
    else if (flag == "--rows-per-call") a.rows_per_call = std::atoll(v);
    else if (flag == "--threads") a.threads = std::atoi(v);
    else if (flag == "--repeats") a.repeats = std::atoi(v);
    else if (flag == "--only") a.only = v;
    else Usage(("unknown flag " + flag).c_str());
  }
  if (a.rows_per_call < 0 || a.threads < 1 || a.repeats < 1) {
    Usage("--rows-per-call must be >= 0; --threads and --repeats at least 1");
  }
  return a;
}

double Wall() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
double Cpu() {
  timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

struct Times {
  double cpu = 1e30, wall = 1e30;
  void Keep(double c, double w) {
    cpu = std::min(cpu, c);
    wall = std::min(wall, w);
  }
};

// (2/n) X^T X of 4 * in correlated inputs with a decaying spectrum and a few outlier channels, as
// real activations have.
at::Tensor RandomHessian(int64_t in) {
  const int64_t n = 4 * in;
  at::Tensor scale = (1.0 + at::arange(in, at::kFloat) / 16.0).rsqrt();
  scale.index_put_({at::randint(in, {in / 64}, at::kLong)}, 8.0f);
  at::Tensor mix = at::eye(in) + at::randn({in, in}) / std::sqrt(static_cast<double>(in));
  at::Tensor x = at::matmul(at::randn({n, in}) * scale, mix);
  return at::matmul(x.t(), x) * (2.0 / static_cast<double>(n));
}

struct Layer {
  const char* name;
  int64_t out, in;
};

struct Setting {
  const char* name;
  int bits;
  bool hessian_search;  // --scale-init hessian: the diag(H)-weighted search with the zero search
};

// One layer's rows, call by call as the pipeline makes them.
template <typename Fn>
std::vector<ptq::QuantizedLinear> ByCalls(const at::Tensor& w, int64_t rows_per_call, Fn fn) {
  std::vector<ptq::QuantizedLinear> parts;
  const int64_t step = rows_per_call > 0 ? rows_per_call : w.size(0);
  for (int64_t r = 0; r < w.size(0); r += step) {
    parts.push_back(fn(w.narrow(0, r, std::min(step, w.size(0) - r))));
  }
  return parts;
}

}  // namespace

int main(int argc, char** argv) {
  const Args args = Parse(argc, argv);
  absl::StatusOr<ptq::ModelConfig> config = ptq::LoadModelConfig(args.model);
  if (!config.ok()) {
    std::fprintf(stderr, "%s\n", config.status().ToString().c_str());
    return 1;
  }
  at::set_num_threads(args.threads);
  at::manual_seed(0);
  const int64_t hidden = config->hidden_size, inter = config->intermediate_size;
  const int64_t head_dim =
      config->head_dim > 0 ? config->head_dim : hidden / config->num_attention_heads;
  const int64_t kv = config->num_key_value_heads * head_dim;
  const std::vector<Layer> layers = {
      {"q_proj", config->num_attention_heads * head_dim, hidden}, {"k_proj", kv, hidden},
      {"v_proj", kv, hidden}, {"o_proj", hidden, config->num_attention_heads * head_dim},
      {"gate_proj", inter, hidden}, {"up_proj", inter, hidden}, {"down_proj", hidden, inter}};
  const std::vector<Setting> settings = {
      {"W4 g128 min-max", 4, false}, {"W4 g128 hessian", 4, true}, {"W2 g128 hessian", 2, true}};

  std::printf("model %s, %lld rows per call, %d thread(s), best of %d\n", args.model.c_str(),
              static_cast<long long>(args.rows_per_call), args.threads, args.repeats);
  std::printf("%-16s %-10s %11s %9s %9s %7s %9s %9s %7s\n", "setting", "layer", "shape",
              "old cpu", "new cpu", "ratio", "old wall", "new wall", "ratio");
  for (const Setting& s : settings) {
    if (std::string(s.name).find(args.only) == std::string::npos) continue;
    ptq::GptqOptions o;
    o.grid.bits = s.bits;
    o.group_size = 128;
    o.grid.mse = s.hessian_search;
    o.grid.hessian_search = s.hessian_search;
    o.grid.min_zero = 1;
    Times old_total{0, 0}, new_total{0, 0};
    for (const Layer& layer : layers) {
      const at::Tensor w = at::randn({layer.out, layer.in}) * 0.02;
      absl::StatusOr<ptq::GptqFactor> factor =
          ptq::PrepareGptq(RandomHessian(layer.in), o, layer.name);
      if (!factor.ok()) {
        std::fprintf(stderr, "%s\n", factor.status().ToString().c_str());
        return 1;
      }
      Times old_best, new_best;
      std::vector<ptq::QuantizedLinear> old_q, new_q;
      for (int r = 0; r < args.repeats; ++r) {
        double c0 = Cpu(), w0 = Wall();
        old_q = ByCalls(w, args.rows_per_call, [&](const at::Tensor& rows) {
          return ptq::ScalarGptqQuantizeWithFactor(rows, *factor, o);
        });
        old_best.Keep(Cpu() - c0, Wall() - w0);
        c0 = Cpu();
        w0 = Wall();
        new_q = ByCalls(w, args.rows_per_call, [&](const at::Tensor& rows) {
          return *ptq::GptqQuantizeWithFactor(rows, *factor, o, layer.name);
        });
        new_best.Keep(Cpu() - c0, Wall() - w0);
      }
      for (size_t i = 0; i < old_q.size(); ++i) {
        if (!at::equal(old_q[i].codes, new_q[i].codes) ||
            !at::equal(old_q[i].scales, new_q[i].scales)) {
          std::fprintf(stderr, "%s %s: the two loops disagree\n", s.name, layer.name);
          return 1;
        }
      }
      std::printf("%-16s %-10s %5lldx%-5lld %9.3f %9.3f %7.2f %9.3f %9.3f %7.2f\n", s.name,
                  layer.name, static_cast<long long>(layer.out), static_cast<long long>(layer.in),
                  old_best.cpu, new_best.cpu, new_best.cpu / old_best.cpu, old_best.wall,
                  new_best.wall, new_best.wall / old_best.wall);
      std::fflush(stdout);
      old_total.cpu += old_best.cpu;
      old_total.wall += old_best.wall;
      new_total.cpu += new_best.cpu;
      new_total.wall += new_best.wall;
    }
    std::printf("%-16s %-10s %11s %9.3f %9.3f %7.2f %9.3f %9.3f %7.2f\n", s.name, "block", "",
                old_total.cpu, new_total.cpu, new_total.cpu / old_total.cpu, old_total.wall,
                new_total.wall, new_total.wall / old_total.wall);
    std::fflush(stdout);
  }
  return 0;
}
