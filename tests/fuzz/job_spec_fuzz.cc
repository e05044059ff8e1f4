// libFuzzer target: what the coordinator does with a Submit request's bytes before queueing a job -
// parse the SubmitRequest, confine its paths to the allowed roots, then ValidateQuantizeSpec against
// the model's config. Must never crash, hang or throw; a spec it accepts must satisfy the ranges the
// pipeline relies on (so a hostile request fails at Submit with a message, not in a worker), and must
// survive the JobSpec -> QuantizeOptions -> JobSpec round trip unchanged.
//
// Paths beginning "@/" are rewritten to the source tree (PTQ_SOURCE_DIR or the working directory), so
// the seed corpus can name the demo model and reach the option checks behind the path checks.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "common/path_confinement.h"
#include "ptq/v1/job_service.pb.h"
#include "worker/quantize_spec.h"

namespace {

std::string SourceDir() {
  const char* env = std::getenv("PTQ_SOURCE_DIR");
  return env != nullptr ? env : std::filesystem::current_path().string();
}

void Rewrite(std::string* path) {
  static const std::string root = SourceDir();
  if (path->rfind("@/", 0) == 0) *path = root + path->substr(1);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ptq::v1::SubmitRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size)) || !request.has_spec()) return 0;
  ptq::v1::JobSpec& spec = *request.mutable_spec();
  Rewrite(spec.mutable_model_path());
  Rewrite(spec.mutable_calib_path());
  Rewrite(spec.mutable_eval_path());
  Rewrite(spec.mutable_output_path());
  // The coordinator's confinement: models and data under the source tree, output under /tmp.
  static const std::vector<std::string> roots = {SourceDir() + "/models", "/tmp"};
  std::vector<const std::string*> paths = {&spec.model_path(), &spec.calib_path(), &spec.output_path()};
  if (!spec.eval_path().empty()) paths.push_back(&spec.eval_path());
  for (const std::string* path : paths) {
    if (absl::Status s = ptq::CheckPathUnderRoots(*path, roots, "path"); !s.ok()) {
      if (std::getenv("PTQ_FUZZ_VERBOSE") != nullptr) std::fprintf(stderr, "%s\n", s.ToString().c_str());
      return 0;
    }
  }
  const absl::Status valid = ptq::worker::ValidateQuantizeSpec(spec);
  // PTQ_FUZZ_VERBOSE=1: say how far an input got (to check that the corpus reaches the option checks).
  static const bool verbose = std::getenv("PTQ_FUZZ_VERBOSE") != nullptr;
  if (verbose) std::fprintf(stderr, "ValidateQuantizeSpec: %s\n", valid.ToString().c_str());
  if (!valid.ok()) return 0;

  // Accepted: the ranges RunQuantize relies on.
  const ptq::QuantizeOptions o = ptq::worker::QuantizeOptionsFromSpec(spec);
  const int bits = o.gptq.grid.bits;
  if (bits != 2 && bits != 3 && bits != 4 && bits != 8) __builtin_trap();
  if (o.samples <= 0 || o.seq_len <= 0 || o.seq_len > ptq::kMaxSequenceLength) __builtin_trap();
  if (o.batch_windows <= 0 || o.batch_windows > ptq::kMaxCalibrationTokens) __builtin_trap();
  if (o.samples > ptq::kMaxCalibrationTokens / o.seq_len) __builtin_trap();
  if (o.eval_seq_len < 0 || o.eval_seq_len > ptq::kMaxSequenceLength) __builtin_trap();
  if (o.eval_max_windows < 0) __builtin_trap();
  if (!std::isfinite(o.gptq.damp) || o.gptq.damp < 0) __builtin_trap();
  if (std::isnan(o.residual_alpha) || o.residual_alpha > 1) __builtin_trap();
  if (!std::isfinite(o.value_damp)) __builtin_trap();
  const ptq::QuantizeOptions resolved = ptq::ResolveQuantizeOptions(o);  // method defaults applied
  if (o.joint_rows < 1 || resolved.refine_iters < 0 || resolved.refine_iters > ptq::kMaxRefineIters ||
      resolved.scale_init.empty()) {
    __builtin_trap();
  }
  if (o.requant_passes < 0 || o.requant_passes > ptq::kMaxRequantPasses) __builtin_trap();
  if (o.qk_hessian != "moment" && o.qk_hessian != "covariance" && o.qk_hessian != "softmax") {
    __builtin_trap();
  }

  // Round trip: the spec a worker receives runs the same options.
  const ptq::QuantizeOptions again =
      ptq::worker::QuantizeOptionsFromSpec(ptq::worker::SpecFromQuantizeOptions(o));
  if (ptq::worker::SpecFromQuantizeOptions(again).SerializeAsString() !=
      ptq::worker::SpecFromQuantizeOptions(o).SerializeAsString()) {
    __builtin_trap();
  }
  return 0;
}
