// Block benchmark of our own quantizer code on one randomly initialised Llama-2-7B-shaped block
// (hidden 4096, MLP 11008, N x 2048 calibration tokens, N = 128; layers q k v o gate up down), on
// the CPU or a CUDA device, with the CUDA kernels on or off where one exists:
//   statistics   HessianAccumulator::Add per batch of 8 windows (kernels off), or the deterministic
//                XᵀX kernel (HessianAccumulateAten) into a float64 partial per batch, added to the
//                accumulator's ExactSum (kernels on: how the accumulator would call it);
//   GPTQ         per layer PrepareGptq, then GptqQuantizeWithFactor (kernels off) or the fused block
//                kernel's column loop GptqColumnLoopAten (kernels on; min-max grids only).
// As ../shared/bench/plain_gptq_block.py does, one 4096-wide H serves q k v o gate up and the
// 11008-wide H of down is accumulated over 1/8 of the windows with its time scaled by 8. Grids as
// the checkpoints have them: asymmetric zero >= 1 (min_zero 1). Prints one JSON object: seconds per
// phase and per layer, and on CUDA the caching allocator's peak bytes per phase.
//
//   gpu_block_bench [--device cpu|cuda] [--kernels on|off] [--samples N] [--bits B] [--group G]
//                   [--mse] [--act-order] [--small] [--layers q,k,...]
//
// --small shrinks the block (hidden 512, MLP 1408, 8 x 256 tokens) for a check that everything
// runs; the full block on the CPU takes hours. Exit status 2: bad flags or the device cannot run.
#include <ATen/ATen.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "core/quant/gptq_quantizer.h"
#include "core/stats/hessian_accumulator.h"
#include "kernels/aten_kernels.h"

#if defined(PTQ_TORCH_CUDA)
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace {

struct Config {
  int64_t hidden = 4096, inter = 11008;
  int64_t samples = 128, seq = 2048, batch_windows = 8, inter_fraction = 8;
  int bits = 4;
  int64_t group = 128;
  bool mse = false, act_order = false;
  bool cuda = false, kernels = false;
  std::set<std::string> layers = {"q", "k", "v", "o", "gate", "up", "down"};
};

[[noreturn]] void Die(const std::string& why, int code = 1) {
  std::fprintf(stderr, "gpu_block_bench: %s\n", why.c_str());
  std::exit(code);
}

void Sync(const Config& c) {
#if defined(PTQ_TORCH_CUDA)
  if (c.cuda) c10::cuda::device_synchronize();
#else
  (void)c;
#endif
}

double Now(const Config& c) {
  Sync(c);
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// The caching allocator's peak of allocated and reserved bytes since the last Reset (CUDA only).
struct Memory {
  bool cuda = false;
  void Reset() const {
#if defined(PTQ_TORCH_CUDA)
    if (cuda) c10::cuda::CUDACachingAllocator::resetPeakStats(0);
#endif
  }
  // {allocated, reserved} peaks in GiB; {-1, -1} without CUDA.
  std::pair<double, double> Peak() const {
#if defined(PTQ_TORCH_CUDA)
    if (cuda) {
      const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(0);
      constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
      // Index 0 is StatType::AGGREGATE in every libtorch version.
      return {static_cast<double>(stats.allocated_bytes[0].peak) / kGiB,
              static_cast<double>(stats.reserved_bytes[0].peak) / kGiB};
    }
#endif
    return {-1.0, -1.0};
  }
};

// H of `windows` random windows of `dim` inputs, through HessianAccumulator, batch by batch.
at::Tensor Statistics(const Config& c, int64_t dim, int64_t windows, const at::TensorOptions& dev) {
  ptq::HessianAccumulator acc(dim);
  const at::Tensor partial = c.kernels ? at::zeros({dim, dim}, dev.dtype(at::kDouble)) : at::Tensor();
  for (int64_t w0 = 0; w0 < windows; w0 += c.batch_windows) {
    const int64_t n = std::min(c.batch_windows, windows - w0);
    // Activations arrive as bfloat16, as the block forward produces them on the GPU.
    const at::Tensor x = at::randn({n, c.seq, dim}, dev.dtype(at::kBFloat16));
    if (c.kernels) {
      partial.zero_();
      if (auto s = ptq::kernels::HessianAccumulateAten(x, partial); !s.ok()) Die(s.ToString());
      acc.sum().Add(partial);
      acc.count() += n * c.seq;
    } else {
      acc.Add(x);
    }
  }
  return acc.Hessian();
}

struct LayerTimes {
  double prepare = 0, loop = 0;
};

// One layer: PrepareGptq, then the column loop (ours, or the kernel's).
LayerTimes QuantizeLayer(const Config& c, const std::string& name, int64_t rows, const at::Tensor& h,
                         const at::TensorOptions& dev) {
  const at::Tensor weight = at::randn({rows, h.size(0)}, dev.dtype(at::kFloat)) * 0.02;
  ptq::GptqOptions o;
  o.grid.bits = c.bits;
  o.grid.min_zero = 1;  // as GPTQ checkpoints store zeros
  o.grid.mse = c.mse;
  o.group_size = c.group;
  o.act_order = c.act_order;
  LayerTimes t;
  double t0 = Now(c);
  auto factor = ptq::PrepareGptq(h, o, name);
  if (!factor.ok()) Die(factor.status().ToString());
  t.prepare = Now(c) - t0;
  t0 = Now(c);
  if (c.kernels) {
    // What GptqQuantizeWithFactor does around its loop, with the kernel's loop inside.
    at::Tensor w = weight.clone();
    w.masked_fill_(factor->dead.to(w.device()).unsqueeze(0), 0.0f);
    if (c.act_order) w = w.index_select(1, factor->perm.to(w.device()));
    ptq::kernels::GptqBlockSettings s;
    s.group_cols = c.group;
    s.bits = c.bits;
    s.min_zero = 1;
    const int64_t block = c.group <= 128 ? c.group * (128 / c.group) : c.group;
    auto q = ptq::kernels::GptqColumnLoopAten(w, factor->u.to(w.device()), block, s);
    if (!q.ok()) Die(q.status().ToString());
  } else {
    auto q = ptq::GptqQuantizeWithFactor(weight, *factor, o, name);
    if (!q.ok()) Die(q.status().ToString());
  }
  t.loop = Now(c) - t0;
  return t;
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

int Run(const Config& c) {
  const at::TensorOptions dev = at::TensorOptions().device(c.cuda ? at::Device(at::kCUDA, 0) : at::kCPU);
  const Memory mem{c.cuda};
  at::manual_seed(0);
  std::map<std::string, double> phases;
  std::map<std::string, std::map<std::string, double>> per_layer;

  // Warm-up: kernel loading, cuBLAS/cuSOLVER handles, the allocator's first blocks.
  {
    Config small = c;
    small.seq = 64;
    Statistics(small, 256, 1, dev);
    QuantizeLayer(c, "warm-up", 256, at::eye(256, dev.dtype(at::kDouble)), dev);
  }
  mem.Reset();
  double t = Now(c);
  const at::Tensor h_hidden = Statistics(c, c.hidden, c.samples, dev);
  phases["hessian_hidden_s"] = Now(c) - t;
  phases["hessian_hidden_peak_allocated_gib"] = mem.Peak().first;
  const bool want_down = c.layers.count("down") > 0;
  at::Tensor h_inter;
  if (want_down) {
    mem.Reset();
    const int64_t windows = std::max<int64_t>(1, c.samples / c.inter_fraction);
    t = Now(c);
    h_inter = Statistics(c, c.inter, windows, dev);
    phases["hessian_inter_s_scaled"] =
        (Now(c) - t) * static_cast<double>(c.samples) / static_cast<double>(windows);
    phases["hessian_inter_peak_allocated_gib"] = mem.Peak().first;
  }
  // The accumulator keeps its sums on the CPU; the quantizer gets H where the weights are.
  const at::Tensor h_hidden_dev = h_hidden.to(dev.device());
  const at::Tensor h_inter_dev = want_down ? h_inter.to(dev.device()) : at::Tensor();

  struct Layer {
    const char* name;
    int64_t rows;
    bool inter_input;
  };
  const std::vector<Layer> layers = {{"q", c.hidden, false},   {"k", c.hidden, false},
                                     {"v", c.hidden, false},   {"o", c.hidden, false},
                                     {"gate", c.inter, false}, {"up", c.inter, false},
                                     {"down", c.hidden, true}};
  double prepare = 0, loop = 0;
  mem.Reset();
  for (const Layer& l : layers) {
    if (c.layers.count(l.name) == 0) continue;
    const LayerTimes lt = QuantizeLayer(c, l.name, l.rows, l.inter_input ? h_inter_dev : h_hidden_dev, dev);
    per_layer["prepare_gptq_s"][l.name] = lt.prepare;
    per_layer["column_loop_s"][l.name] = lt.loop;
    prepare += lt.prepare;
    loop += lt.loop;
  }
  phases["prepare_gptq_s"] = prepare;
  phases["column_loop_s"] = loop;
  phases["gptq_peak_allocated_gib"] = mem.Peak().first;
  phases["gptq_peak_reserved_gib"] = mem.Peak().second;
  phases["gptq_block_s"] = prepare + loop;
  phases["gptq_block_with_statistics_s"] =
      prepare + loop + phases["hessian_hidden_s"] + phases["hessian_inter_s_scaled"];

  std::string names;
  for (const Layer& l : layers) {
    if (c.layers.count(l.name)) names += std::string(names.empty() ? "" : ",") + l.name;
  }
  std::printf("{\"device\": \"%s\", \"kernels\": %s, \"hidden\": %lld, \"inter\": %lld, "
              "\"tokens\": %lld, \"bits\": %d, \"group\": %lld, \"mse\": %s, \"act_order\": %s, "
              "\"min_zero\": 1, \"layers\": \"%s\",\n \"phases\": %s",
              c.cuda ? "cuda" : "cpu", c.kernels ? "true" : "false", static_cast<long long>(c.hidden),
              static_cast<long long>(c.inter), static_cast<long long>(c.samples * c.seq), c.bits,
              static_cast<long long>(c.group), c.mse ? "true" : "false",
              c.act_order ? "true" : "false", names.c_str(), Json(phases).c_str());
  for (const auto& [k, v] : per_layer) std::printf(",\n \"%s\": %s", k.c_str(), Json(v).c_str());
  std::printf("}\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Config c;
  const char* usage =
      "usage: gpu_block_bench [--device cpu|cuda] [--kernels on|off] [--samples N] [--bits B] "
      "[--group G] [--mse] [--act-order] [--small] [--layers q,k,v,o,gate,up,down]";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Die(a + " needs a value\n" + usage, 2);
      return argv[++i];
    };
    if (a == "--device") {
      const std::string d = value();
      if (d != "cpu" && d != "cuda") Die("--device is cpu or cuda", 2);
      c.cuda = d == "cuda";
    } else if (a == "--kernels") {
      const std::string k = value();
      if (k != "on" && k != "off") Die("--kernels is on or off", 2);
      c.kernels = k == "on";
    } else if (a == "--samples") {
      c.samples = std::atoll(value().c_str());
    } else if (a == "--bits") {
      c.bits = std::atoi(value().c_str());
    } else if (a == "--group") {
      c.group = std::atoll(value().c_str());
    } else if (a == "--mse") {
      c.mse = true;
    } else if (a == "--act-order") {
      c.act_order = true;
    } else if (a == "--small") {
      c.hidden = 512;
      c.inter = 1408;
      c.samples = 8;
      c.seq = 256;
    } else if (a == "--layers") {
      c.layers.clear();
      std::stringstream ss(value());
      for (std::string name; std::getline(ss, name, ',');) c.layers.insert(name);
    } else {
      Die(usage, 2);
    }
  }
  if (c.samples < 1 || c.bits < 2 || c.bits > 8) Die("--samples >= 1, --bits 2..8", 2);
  if (c.kernels) {
    // The block kernel fits min-max grids at group starts: the MSE search and per-row grids are
    // GptqQuantizeWithFactor's alone.
    if (c.mse) Die("--kernels on: the block kernel has no MSE grid search; use --kernels off", 2);
    if (c.group < 1 || c.group > 256 || (c.group < 128 && 128 % c.group != 0)) {
      Die("--kernels on needs groups of 1..256 columns that tile the 128-column lazy block", 2);
    }
  }
  if (c.cuda) {
    if (const std::string why = ptq::kernels::CudaKernelsUnavailableReason(); !why.empty()) {
      // Only the kernels need our CUDA build; ATen alone needs a libtorch that sees a device.
      if (c.kernels || !at::hasCUDA()) Die("--device cuda: " + why, 2);
    }
  } else if (c.kernels) {
    std::fprintf(stderr, "gpu_block_bench: --kernels on with --device cpu runs the kernels' CPU "
                         "references (a correctness path, not an accelerator)\n");
  }
  return Run(c);
}
