#include "core/pipeline/quantize_options.h"

#include <cmath>
#include <numeric>
#include <type_traits>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace ptq {

absl::StatusOr<Method> ParseMethod(std::string_view name) {
  if (name == "rtn") return Method::kRtn;
  if (name == "gptq") return Method::kGptq;
  if (name == "boa") return Method::kBoa;
  if (name == "turboboa") return Method::kTurboBoa;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown method \"", std::string(name), "\" (supported: rtn, gptq, boa, turboboa)"));
}

std::string_view MethodName(Method method) {
  switch (method) {
    case Method::kRtn: return "rtn";
    case Method::kGptq: return "gptq";
    case Method::kBoa: return "boa";
    case Method::kTurboBoa: return "turboboa";
  }
  return "?";
}

absl::StatusOr<CheckpointFormat> ParseCheckpointFormat(std::string_view name) {
  for (CheckpointFormat f : {CheckpointFormat::kAuto, CheckpointFormat::kGptq,
                             CheckpointFormat::kCompressedTensors, CheckpointFormat::kDequantized}) {
    if (name == CheckpointFormatName(f)) return f;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown format \"", std::string(name),
      "\" (supported: auto, gptq, compressed-tensors, dequantized)"));
}

std::string_view CheckpointFormatName(CheckpointFormat format) {
  switch (format) {
    case CheckpointFormat::kAuto: return "auto";
    case CheckpointFormat::kGptq: return "gptq";
    case CheckpointFormat::kCompressedTensors: return "compressed-tensors";
    case CheckpointFormat::kDequantized: return "dequantized";
  }
  return "?";
}

CheckpointFormat ResolveCheckpointFormat(const QuantizeOptions& o) {
  const CheckpointFormat requested = ParseCheckpointFormat(o.format).value();
  if (requested != CheckpointFormat::kAuto) return requested;
  const int bits = o.gptq.grid.bits;
  if (o.gptq.grid.sym && (bits == 4 || bits == 8)) return CheckpointFormat::kGptq;
  // compressed-tensors reshapes each row into whole groups; only GPTQ's g_idx holds a short one.
  if (o.partial_groups) return CheckpointFormat::kGptq;
  return CheckpointFormat::kCompressedTensors;
}

absl::StatusOr<int> ParseDeviceName(std::string_view name) {
  if (name == "cpu") return -1;
  if (name == "cuda") return 0;
  constexpr std::string_view kCuda = "cuda:";
  int index = -1;
  if (name.substr(0, kCuda.size()) == kCuda && name.size() > kCuda.size() &&
      name.substr(kCuda.size()).find_first_not_of("0123456789") == std::string_view::npos &&
      absl::SimpleAtoi(std::string(name.substr(kCuda.size())), &index) && index < 1024) {
    return index;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown --device \"", std::string(name), "\" (supported: cpu, cuda, cuda:N)"));
}

namespace {

// --residual-alpha unset (negative) means the method's own: 0.25 for turboboa, otherwise off.
double ResidualAlpha(const QuantizeOptions& o, Method method) {
  return o.residual_alpha < 0 ? (method == Method::kTurboBoa ? 0.25 : 0.0) : o.residual_alpha;
}

absl::Status ValidateResidualCorrection(const QuantizeOptions& o, Method method) {
  if (std::isnan(o.residual_alpha) || o.residual_alpha > 1) {
    return absl::InvalidArgumentError("--residual-alpha must be between 0 (off) and 1 (exact target)");
  }
  if (method == Method::kRtn && o.residual_alpha > 0) {
    return absl::InvalidArgumentError("--residual-alpha needs a Hessian (not rtn)");
  }
  if (o.residual_every < 0 || o.residual_every > kMaxCalibrationTokens) {
    return absl::InvalidArgumentError(absl::StrCat("--residual-every must be between 1 and ",
                                                   kMaxCalibrationTokens, " (0: the default)"));
  }
  if (o.residual_every > 0 && !(ResidualAlpha(o, method) > 0)) {
    return absl::InvalidArgumentError(
        "--residual-every needs the residual correction (turboboa, or --residual-alpha > 0)");
  }
  return absl::OkStatus();
}

// Group sizes against the layers' input sizes: a shorter last group only where asked for and where
// the format can store it.
absl::Status ValidateGroups(const QuantizeOptions& o, const ModelConfig& c, CheckpointFormat format) {
  const int64_t g = o.gptq.group_size;
  if (g > 0) {
    for (int64_t dim : {c.hidden_size, c.num_attention_heads * c.head_dim, c.intermediate_size}) {
      if (dim % g != 0 && !o.partial_groups) {
        return absl::InvalidArgumentError(absl::StrCat(
            "group size ", g, " does not divide the input size ", dim,
            " of some linear layers (use --partial-groups for a shorter last group, which vLLM's "
            "kernels do not load, or a group size that divides it)"));
      }
      if (dim % g != 0 && format == CheckpointFormat::kCompressedTensors) {
        // compressed-tensors' dequantization reshapes each row into whole groups and raises
        // otherwise (quantization/lifecycle/forward_helpers.py, _process_group).
        return absl::InvalidArgumentError(absl::StrCat(
            "--format compressed-tensors cannot express a shorter last group: group size ", g,
            " does not divide the input size ", dim,
            " (use --format gptq, which GPTQModel loads but no fast kernel does, or a group size "
            "that divides every layer)"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateQuantizeOptions(const QuantizeOptions& o, const ModelConfig& c) {
  if (absl::StatusOr<int> device = ParseDeviceName(o.device); !device.ok()) return device.status();
  absl::StatusOr<Method> method = ParseMethod(o.method);
  if (!method.ok()) return method.status();
  const bool attention_aware = *method == Method::kBoa || *method == Method::kTurboBoa;
  if (o.joint_rows < 1 || (*method == Method::kTurboBoa && c.head_dim % o.joint_rows != 0)) {
    return absl::InvalidArgumentError(absl::StrCat("--joint-rows ", o.joint_rows,
                                                   " must be positive and divide head_dim ", c.head_dim));
  }
  if (o.refine_iters < -1 || o.refine_iters > kMaxRefineIters) {  // -1: the method's default
    return absl::InvalidArgumentError(
        absl::StrCat("--refine-iters must be between 0 and ", kMaxRefineIters));
  }
  const int refine_iters = o.refine_iters >= 0 ? o.refine_iters
                           : *method == Method::kRtn ? 0
                                                     : kDefaultRefineIters;
  if (o.requant_passes < 0 || o.requant_passes > kMaxRequantPasses) {
    return absl::InvalidArgumentError(
        absl::StrCat("--requant-passes must be between 0 and ", kMaxRequantPasses));
  }
  if (o.requant_passes > 0 && refine_iters == 0) {
    return absl::InvalidArgumentError(
        "--requant-passes quantizes again on the refined scales: it needs --refine-iters > 0");
  }
  PTQ_RETURN_IF_ERROR(ValidateResidualCorrection(o, *method));
  if (!o.scale_init.empty() && o.scale_init != "minmax" && o.scale_init != "hessian" &&
      o.scale_init != "hessian-block") {
    return absl::InvalidArgumentError(absl::StrCat("unknown --scale-init \"", o.scale_init,
                                                   "\" (supported: minmax, hessian, hessian-block)"));
  }
  if (o.scale_init == "hessian-block" && o.gptq.group_size <= 0) {
    // Per channel the "block" is the whole in x in Hessian: a d^T H d per candidate and row costs
    // in^2 (79 TFLOP per layer of a 7B MLP); the diagonal search is what per-channel grids use.
    return absl::InvalidArgumentError(
        "--scale-init hessian-block needs groups (--group-size > 0); use hessian per channel");
  }
  if (QkHessian qk; !ParseQkHessian(o.qk_hessian, &qk)) {
    return absl::InvalidArgumentError(absl::StrCat("unknown --qk-hessian \"", o.qk_hessian,
                                                   "\" (supported: moment, covariance, softmax)"));
  }
  if (*method == Method::kRtn && ((!o.scale_init.empty() && o.scale_init != "minmax") ||
                                  o.refine_iters > 0)) {
    return absl::InvalidArgumentError("--scale-init hessian and --refine-iters need a Hessian (not rtn)");
  }
  const int bits = o.gptq.grid.bits;
  if (bits != 2 && bits != 3 && bits != 4 && bits != 8) {
    return absl::InvalidArgumentError(absl::StrCat("unsupported bits ", bits, " (use 2, 3, 4 or 8)"));
  }
  absl::StatusOr<CheckpointFormat> requested = ParseCheckpointFormat(o.format);
  if (!requested.ok()) return requested.status();
  const CheckpointFormat format = ResolveCheckpointFormat(o);
  if (o.max_shard_mib <= 0 || o.max_shard_mib > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError("--max-shard-mib must be positive");
  }
  if (format == CheckpointFormat::kGptq) {
    // Packed words must be whole: inputs pack into qweight, outputs into qzeros.
    const int64_t q_dim = c.num_attention_heads * c.head_dim;
    const int64_t kv_dim = c.num_key_value_heads * c.head_dim;
    for (int64_t dim : {c.hidden_size, q_dim, kv_dim, c.intermediate_size}) {
      if ((dim * bits) % 32 != 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "layer size ", dim, " cannot be packed at ", bits,
            " bits in the GPTQ format (needs a multiple of ", 32 / std::gcd(32, bits),
            "); use --format compressed-tensors (it pads the last word) or dequantized"));
      }
    }
  }
  if (o.samples <= 0 || o.seq_len <= 0) {
    return absl::InvalidArgumentError("--samples and --seq-len must be positive");
  }
  if (o.seq_len > kMaxSequenceLength || o.samples > kMaxCalibrationTokens / o.seq_len) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--samples ", o.samples, " x --seq-len ", o.seq_len, " exceeds the limit of ",
        kMaxCalibrationTokens, " calibration tokens (windows of at most ", kMaxSequenceLength, ")"));
  }
  if (o.batch_windows <= 0 || o.batch_windows > kMaxCalibrationTokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch_windows must be between 1 and ", kMaxCalibrationTokens));
  }
  // Up to 2^40 MiB, so the byte count cannot overflow.
  if (o.forward_cache_mib < 0 || o.forward_cache_mib > (int64_t{1} << 40)) {
    return absl::InvalidArgumentError("--forward-cache-mib must be between 0 and 2^40");
  }
  if (o.eval_seq_len < 0 || o.eval_seq_len > kMaxSequenceLength || o.eval_max_windows < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--eval-seq-len must be between 0 and ", kMaxSequenceLength,
        " and --eval-windows non-negative (0: defaults)"));
  }
  if (!std::isfinite(o.gptq.damp) || o.gptq.damp < 0) {
    return absl::InvalidArgumentError("damping must be finite and non-negative");
  }
  if (!std::isfinite(o.value_damp)) {  // negative means "as --damp"
    return absl::InvalidArgumentError("--value-damp must be finite");
  }
  if (o.act_order_rows && !attention_aware) {
    return absl::InvalidArgumentError(
        "--act-order-rows orders q/k rows by their H_out: it needs --method boa or turboboa");
  }
  return ValidateGroups(o, c, format);
}

QuantizeOptions ResolveQuantizeOptions(const QuantizeOptions& options) {
  QuantizeOptions r = options;
  const Method method = ParseMethod(options.method).value();
  const bool attention_aware = method == Method::kBoa || method == Method::kTurboBoa;
  if (method == Method::kBoa) r.joint_rows = 1;
  r.residual_alpha = ResidualAlpha(options, method);
  if (r.residual_every == 0 && r.residual_alpha > 0) r.residual_every = kDefaultResidualEvery;
  // Two-stage scales for every method with a Hessian (docs/results.md, "Defaults").
  if (r.refine_iters < 0) r.refine_iters = method == Method::kRtn ? 0 : kDefaultRefineIters;
  if (r.scale_init.empty()) r.scale_init = method == Method::kRtn ? "minmax" : "hessian";
  r.value_block = attention_aware && options.value_block;
  r.value_damp = r.value_block ? (options.value_damp >= 0 ? options.value_damp : options.gptq.damp)
                               : -1.0;
  if (!attention_aware) r.qk_hessian.clear();
  r.act_order_rows = attention_aware && options.act_order_rows;
  r.format = std::string(CheckpointFormatName(ResolveCheckpointFormat(options)));
  return r;
}

nlohmann::json CheckpointOptionsJson(const QuantizeOptions& options) {
  nlohmann::json j = nlohmann::json::object();
  const QuantizeOptions resolved = ResolveQuantizeOptions(options);
  VisitQuantizeOptions(resolved, [&j](const OptionField& f, const auto& value) {
    if (!f.checkpoint.empty()) j[std::string(f.checkpoint)] = value;
  });
  return j;
}

}  // namespace ptq
