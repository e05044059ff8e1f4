#include "core/checkpoint/serving_support.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace ptq {
namespace {

struct LayerShape {
  const char* name;
  int64_t in, out;
  bool row_parallel;  // vLLM splits the input dimension over tensor-parallel ranks
};

std::vector<LayerShape> Shapes(const ModelConfig& c) {
  const int64_t q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim;
  return {{"q_proj", c.hidden_size, q, false},         {"k_proj", c.hidden_size, kv, false},
          {"v_proj", c.hidden_size, kv, false},        {"o_proj", q, c.hidden_size, true},
          {"gate_proj", c.hidden_size, c.intermediate_size, false},
          {"up_proj", c.hidden_size, c.intermediate_size, false},
          {"down_proj", c.intermediate_size, c.hidden_size, true}};
}

// vLLM's Marlin: group sizes (marlin_utils.py MARLIN_SUPPORTED_GROUP_SIZES) and tiles
// (GPTQ_MARLIN_MIN_THREAD_N 64, GPTQ_MARLIN_MIN_THREAD_K 128).
bool MarlinGroup(int64_t g) { return g == -1 || g == 32 || g == 64 || g == 128; }

}  // namespace

ServingSupport DescribeServing(const QuantizeOptions& o, const ModelConfig& config) {
  ServingSupport s;
  s.format = ResolveCheckpointFormat(o);
  const int bits = o.gptq.grid.bits;
  const bool sym = o.gptq.grid.sym;
  const int64_t g = o.gptq.group_size > 0 ? o.gptq.group_size : -1;
  const bool act_groups = o.gptq.act_order && !o.gptq.static_groups && g > 0;  // g_idx not in column order
  const std::vector<LayerShape> shapes = Shapes(config);

  std::vector<std::string> partial, untiled;
  for (const LayerShape& l : shapes) {
    if (g > 0 && l.in % g != 0) partial.push_back(absl::StrCat(l.name, " (", l.in, " inputs)"));
    if (l.in % 128 != 0 || l.out % 64 != 0) {
      untiled.push_back(absl::StrCat(l.name, " [", l.out, " x ", l.in, "]"));
    }
  }
  for (int tp : {1, 2, 4, 8}) {
    bool whole = true;
    for (const LayerShape& l : shapes) {
      const int64_t split = l.row_parallel ? l.in : l.out;
      if (split % tp != 0 || (l.row_parallel && g > 0 && (l.in / tp) % g != 0)) whole = false;
    }
    if (whole) s.tensor_parallel.push_back(tp);
  }

  ServingTarget vllm{"vLLM", "", false};
  ServingTarget hf{"transformers", "", false};
  const bool fast_bits = bits == 4 || bits == 8;
  // The Marlin checks shared by vLLM's GPTQ and compressed-tensors paths; empty when Marlin takes it.
  auto marlin_refusal = [&]() -> std::string {
    if (!partial.empty()) return "none: a shorter last group (--partial-groups)";
    if (!MarlinGroup(g)) return absl::StrCat("none: Marlin takes group sizes -1, 32, 64 and 128, not ", g);
    if (act_groups && !untiled.empty()) {
      return absl::StrCat("none: with act-order groups Marlin keeps its strict tile check (input a "
                          "multiple of 128, output of 64), which ",
                          absl::StrJoin(untiled, ", "), " fail");
    }
    return "";
  };
  switch (s.format) {
    case CheckpointFormat::kGptq:
      if (!sym || !fast_bits) {
        vllm.kernel = absl::StrCat("none: vLLM's GPTQ path maps only 4- and 8-bit symmetric grids "
                                   "(gptq_marlin.py); use --format compressed-tensors");
      } else if (std::string why = marlin_refusal(); !why.empty()) {
        vllm.kernel = why;
      } else {
        vllm.loads = true;
        vllm.kernel = absl::StrCat("GPTQ Marlin (uint", bits, "b", 1 << (bits - 1), ")",
                                   (g == -1 || g == 128) && !act_groups ? "; Machete on SM90" : "");
      }
      hf.loads = true;
      hf.kernel = "GPTQModel (2/3/4/8 bits, zero points, act-order, partial groups)";
      break;
    case CheckpointFormat::kCompressedTensors:
      if (fast_bits) {
        if (std::string why = marlin_refusal(); !why.empty()) {
          vllm.kernel = why;
        } else {
          vllm.loads = true;
          vllm.kernel = sym ? absl::StrCat("compressed-tensors WNA16 -> Marlin (uint", bits, "b",
                                           1 << (bits - 1), ")")
                            : absl::StrCat("compressed-tensors WNA16 -> Marlin with zero points (uint",
                                           bits, ")");
        }
      } else if (!sym) {
        vllm.kernel = absl::StrCat("none established: vLLM's WNA16 scheme maps zero points at 4 and 8 "
                                   "bits only (WNA16_ZP_SUPPORTED_TYPES_MAP); use --sym for Humming");
      } else if (act_groups) {
        vllm.kernel = "none: Humming does not take act-order groups (use --static-groups)";
      } else {
        vllm.loads = true;
        vllm.kernel = absl::StrCat("compressed-tensors WNA16 -> Humming (uint", bits, "b",
                                   1 << (bits - 1), "; SM75+, the humming package, vLLM >= mid-2026)");
      }
      hf.loads = true;
      hf.kernel = bits == 3 ? "compressed-tensors >= 0.18.0 decompresses to dense weights on load"
                            : "compressed-tensors decompresses to dense weights on load";
      break;
    default:  // dequantized: an ordinary model
      vllm = {"vLLM", "dense (no quantized kernel: float32 weights)", true};
      hf = {"transformers", "dense (float32 weights)", true};
      break;
  }
  s.targets = {vllm, hf};

  if (s.format != CheckpointFormat::kDequantized && !vllm.loads) {
    s.warnings.push_back(absl::StrCat("no vLLM kernel loads this checkpoint: ", vllm.kernel));
  }
  if (!partial.empty()) {
    s.warnings.push_back(absl::StrCat("group size ", g, " does not divide ", absl::StrJoin(partial, ", "),
                                      ": no fast kernel loads a shorter last group"));
  }
  if (vllm.loads && !act_groups && !untiled.empty() && s.format != CheckpointFormat::kDequantized) {
    s.warnings.push_back(absl::StrCat("vLLM releases before Marlin's tile padding refuse ",
                                      absl::StrJoin(untiled, ", "),
                                      " (input not a multiple of 128 or output of 64)"));
  }
  if (s.format != CheckpointFormat::kDequantized && vllm.loads) {
    std::vector<int> split;
    for (int tp : {2, 4, 8}) {
      if (std::find(s.tensor_parallel.begin(), s.tensor_parallel.end(), tp) == s.tensor_parallel.end()) {
        split.push_back(tp);
      }
    }
    if (!split.empty()) {
      s.warnings.push_back(absl::StrCat("vLLM --tensor-parallel-size ", absl::StrJoin(split, "/"),
                                        " would split a layer or one of its groups across ranks; "
                                        "it loads at ", absl::StrJoin(s.tensor_parallel, "/")));
    }
  }
  return s;
}

nlohmann::json ServingSupportJson(const ServingSupport& s) {
  nlohmann::json targets = nlohmann::json::array();
  for (const ServingTarget& t : s.targets) {
    targets.push_back({{"runtime", t.runtime}, {"loads", t.loads}, {"kernel", t.kernel}});
  }
  return {{"format", std::string(CheckpointFormatName(s.format))},
          {"runtimes", targets},
          {"vllm_tensor_parallel", s.tensor_parallel},
          {"warnings", s.warnings}};
}

std::vector<std::string> ServingSupportLines(const ServingSupport& s) {
  std::vector<std::string> lines = {
      absl::StrCat("checkpoint format: ", std::string(CheckpointFormatName(s.format)))};
  for (const ServingTarget& t : s.targets) {
    lines.push_back(absl::StrCat("  ", t.runtime, ": ", t.loads ? "loads, " : "does not load, ", t.kernel));
  }
  for (const std::string& w : s.warnings) lines.push_back(absl::StrCat("  warning: ", w));
  return lines;
}

}  // namespace ptq
