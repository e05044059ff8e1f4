// JobSpec <-> QuantizeOptions: a submitted job runs exactly what the same flags run in process.
#include "worker/quantize_spec.h"

#include <cmath>
#include <set>
#include <string>
#include <type_traits>

#include <google/protobuf/descriptor.h>

#include <gtest/gtest.h>

#include "tests/test_paths.h"

namespace ptq::worker {
namespace {

// Every field QuantizeOptions exposes on the command line, compared one by one.
void ExpectSameOptions(const QuantizeOptions& a, const QuantizeOptions& b) {
  EXPECT_EQ(a.model_dir, b.model_dir);
  EXPECT_EQ(a.calib_path, b.calib_path);
  EXPECT_EQ(a.out_dir, b.out_dir);
  EXPECT_EQ(a.eval_path, b.eval_path);
  EXPECT_EQ(a.eval_fp, b.eval_fp);
  EXPECT_EQ(a.method, b.method);
  EXPECT_EQ(a.joint_rows, b.joint_rows);
  EXPECT_EQ(a.refine_iters, b.refine_iters);
  EXPECT_EQ(a.requant_passes, b.requant_passes);
  EXPECT_EQ(a.scale_init, b.scale_init);
  EXPECT_EQ(a.format, b.format);
  EXPECT_EQ(a.gptq.grid.bits, b.gptq.grid.bits);
  EXPECT_EQ(a.gptq.grid.sym, b.gptq.grid.sym);
  EXPECT_EQ(a.gptq.grid.mse, b.gptq.grid.mse);
  EXPECT_EQ(a.gptq.group_size, b.gptq.group_size);
  EXPECT_EQ(a.gptq.act_order, b.gptq.act_order);
  EXPECT_EQ(a.gptq.static_groups, b.gptq.static_groups);
  EXPECT_EQ(a.gptq.damp, b.gptq.damp);
  EXPECT_EQ(a.samples, b.samples);
  EXPECT_EQ(a.seq_len, b.seq_len);
  EXPECT_EQ(a.eval_seq_len, b.eval_seq_len);
  EXPECT_EQ(a.eval_max_windows, b.eval_max_windows);
  EXPECT_EQ(a.seed, b.seed);
  EXPECT_EQ(a.force, b.force);
  EXPECT_EQ(a.partial_groups, b.partial_groups);
  EXPECT_EQ(a.batch_windows, b.batch_windows);
  EXPECT_EQ(a.residual_alpha, b.residual_alpha);
  EXPECT_EQ(a.value_block, b.value_block);
  EXPECT_EQ(a.sequential, b.sequential);
  EXPECT_EQ(a.qk_hessian, b.qk_hessian);
  EXPECT_EQ(a.value_damp, b.value_damp);
  EXPECT_EQ(a.act_order_rows, b.act_order_rows);
}

TEST(QuantizeSpecTest, OptionsSurviveTheRoundTrip) {
  QuantizeOptions o;
  o.model_dir = "/m";
  o.calib_path = "/c.txt";
  o.out_dir = "/o";
  o.eval_path = "/v.txt";
  o.eval_fp = false;
  o.method = "turboboa";
  o.joint_rows = 8;
  o.refine_iters = 0;  // zero is "off", not "the method's default"
  o.requant_passes = 3;
  o.scale_init = "hessian";
  o.format = "dequantized";
  o.gptq.grid.bits = 3;
  o.gptq.grid.sym = true;
  o.gptq.grid.mse = true;
  o.gptq.group_size = -1;
  o.gptq.act_order = true;
  o.gptq.static_groups = true;
  o.gptq.damp = 0;  // zero is a value, not "unset"
  o.samples = 7;
  o.seq_len = 33;
  o.eval_seq_len = 65;
  o.eval_max_windows = 3;
  o.seed = 42;
  o.force = true;
  o.partial_groups = true;
  o.batch_windows = 2;
  o.residual_alpha = 0;  // zero is "off", not "the method's default"
  o.value_block = true;  // not the default
  o.sequential = false;
  o.qk_hessian = "softmax";
  o.value_damp = 0;  // zero is a value, not "as --damp"
  o.act_order_rows = true;
  ExpectSameOptions(QuantizeOptionsFromSpec(SpecFromQuantizeOptions(o)), o);
}

TEST(QuantizeSpecTest, AnEmptySpecMeansTheQuantizeDefaults) {
  ExpectSameOptions(QuantizeOptionsFromSpec(v1::JobSpec()), QuantizeOptions());
}

// Valid options for the demo model (g64 divides its MLP width 704).
QuantizeOptions DemoModelOptions() {
  QuantizeOptions o;
  o.model_dir = testing::DemoModelDir();
  o.calib_path = testing::DemoCalibText();
  o.out_dir = "/tmp/x";
  o.gptq.group_size = 64;
  return o;
}

TEST(QuantizeSpecTest, ValidationNamesTheField) {
  const QuantizeOptions o = DemoModelOptions();
  EXPECT_TRUE(ValidateQuantizeSpec(SpecFromQuantizeOptions(o)).ok());
  v1::JobSpec spec = SpecFromQuantizeOptions(o);
  spec.set_eval_path("/nonexistent/v.txt");
  absl::Status s = ValidateQuantizeSpec(spec);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "eval_path /nonexistent/v.txt is not a readable file");
  spec = SpecFromQuantizeOptions(o);
  spec.set_output_path(testing::DemoModelDir());  // holds a model
  EXPECT_NE(ValidateQuantizeSpec(spec).message().find("already holds a model"), absl::string_view::npos);
  spec.set_force(true);
  EXPECT_TRUE(ValidateQuantizeSpec(spec).ok());
  spec = SpecFromQuantizeOptions(o);
  spec.clear_output_path();
  EXPECT_EQ(ValidateQuantizeSpec(spec).message(), "output_path is required");
}

// A hostile request must fail at Submit with a message, not in a worker: non-finite numbers (NaN
// compares false with every bound) and sizes that would exhaust memory or time. Found by
// tests/fuzz/job_spec_fuzz.cc's invariants.
TEST(QuantizeSpecTest, RefusesNonFiniteNumbersAndSizesBeyondTheLimits) {
  const QuantizeOptions o = DemoModelOptions();
  const v1::JobSpec good = SpecFromQuantizeOptions(o);
  ASSERT_TRUE(ValidateQuantizeSpec(good).ok());
  auto refused = [&](auto&& edit) {
    v1::JobSpec spec = good;
    edit(spec);
    absl::Status s = ValidateQuantizeSpec(spec);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << spec.ShortDebugString();
    return std::string(s.message());
  };
  EXPECT_NE(refused([](v1::JobSpec& s) { s.set_residual_alpha(std::nan("")); }).find("residual-alpha"),
            std::string::npos);
  EXPECT_NE(refused([](v1::JobSpec& s) { s.set_damp(std::nan("")); }).find("damping"), std::string::npos);
  EXPECT_NE(refused([](v1::JobSpec& s) { s.set_damp(INFINITY); }).find("damping"), std::string::npos);
  // 2^20 windows of 2^20 tokens: a petabyte of activations.
  EXPECT_NE(refused([](v1::JobSpec& s) {
              s.set_samples(int64_t{1} << 20);
              s.set_seq_len(int64_t{1} << 20);
            }).find("calibration tokens"),
            std::string::npos);
  refused([](v1::JobSpec& s) { s.set_seq_len(kMaxSequenceLength + 1); s.set_samples(1); });
  refused([](v1::JobSpec& s) { s.set_batch_windows(INT64_MAX); });  // (samples + batch - 1) overflows
  refused([](v1::JobSpec& s) { s.set_refine_iters(kMaxRefineIters + 1); });
  refused([](v1::JobSpec& s) { s.set_refine_iters(1); s.set_requant_passes(kMaxRequantPasses + 1); });
  refused([](v1::JobSpec& s) { s.set_requant_passes(-1); });
  EXPECT_NE(refused([](v1::JobSpec& s) { s.set_qk_hessian("centred"); }).find("qk-hessian"),
            std::string::npos);
  EXPECT_NE(refused([](v1::JobSpec& s) { s.set_value_damp(std::nan("")); }).find("value-damp"),
            std::string::npos);
  // Row order by H_out needs an H_out: refused for GPTQ, accepted for TurboBoA.
  EXPECT_NE(refused([](v1::JobSpec& s) {
              s.set_method("gptq");
              s.set_act_order_rows(true);
            }).find("--act-order-rows"),
            std::string::npos);
  v1::JobSpec rows_spec = good;
  rows_spec.set_method("turboboa");
  rows_spec.set_act_order_rows(true);
  EXPECT_TRUE(ValidateQuantizeSpec(rows_spec).ok()) << ValidateQuantizeSpec(rows_spec);
  // Requantizing on refined scales needs the refinement.
  EXPECT_NE(refused([](v1::JobSpec& s) { s.set_refine_iters(0); s.set_requant_passes(1); })
                .find("--refine-iters"),
            std::string::npos);
  refused([](v1::JobSpec& s) { s.set_eval_seq_len(-1); });
  refused([](v1::JobSpec& s) { s.set_eval_max_windows(-5); });
  // The limits themselves are allowed.
  v1::JobSpec at_limit = good;
  at_limit.set_samples(kMaxCalibrationTokens / 256);
  at_limit.set_seq_len(256);
  at_limit.set_refine_iters(kMaxRefineIters);
  at_limit.set_requant_passes(kMaxRequantPasses);
  EXPECT_TRUE(ValidateQuantizeSpec(at_limit).ok()) << ValidateQuantizeSpec(at_limit);
}

// The option list and the API agree: every option names a JobSpec field of its own type, and every
// JobSpec field is an option (a field added to the API without a row would be silently dropped).
TEST(QuantizeSpecTest, EveryOptionIsAJobSpecFieldAndEveryFieldAnOption) {
  using google::protobuf::FieldDescriptor;
  const google::protobuf::Descriptor* d = v1::JobSpec::descriptor();
  std::set<std::string> named;
  QuantizeOptions o;
  VisitQuantizeOptions(o, [&](const OptionField& f, const auto& member) {
    using T = std::decay_t<decltype(member)>;
    if (f.name.empty()) return;  // a setting of the process (--device), not of the job
    const FieldDescriptor* field = d->FindFieldByName(std::string(f.name));
    ASSERT_NE(field, nullptr) << f.name;
    named.insert(std::string(f.name));
    FieldDescriptor::CppType want = FieldDescriptor::CPPTYPE_MESSAGE;
    if constexpr (std::is_same_v<T, std::string>) want = FieldDescriptor::CPPTYPE_STRING;
    if constexpr (std::is_same_v<T, bool>) want = FieldDescriptor::CPPTYPE_BOOL;
    if constexpr (std::is_same_v<T, int>) want = FieldDescriptor::CPPTYPE_INT32;
    if constexpr (std::is_same_v<T, int64_t>) want = FieldDescriptor::CPPTYPE_INT64;
    if constexpr (std::is_same_v<T, uint64_t>) want = FieldDescriptor::CPPTYPE_UINT64;
    if constexpr (std::is_same_v<T, double>) want = FieldDescriptor::CPPTYPE_DOUBLE;
    EXPECT_EQ(field->cpp_type(), want) << f.name;
    EXPECT_FALSE(field->is_repeated()) << f.name;
  });
  for (int i = 0; i < d->field_count(); ++i) {
    EXPECT_TRUE(named.count(d->field(i)->name())) << "JobSpec." << d->field(i)->name()
                                                   << " has no row in VisitQuantizeOptions";
  }
}

}  // namespace
}  // namespace ptq::worker
