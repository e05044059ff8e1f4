// The job flags derived from the option list: every option with a flag is accepted, sets its member,
// and the negated flags (--no-sequential, --skip-fp-eval) clear theirs; --no-value-block, the
// default's old flag, is still accepted (hidden).
#include "client/quantize_flags.h"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

namespace ptq::client {
namespace {

int Parse(CLI::App& app, std::vector<std::string> args) {
  std::vector<const char*> argv = {"ptq"};
  for (const std::string& a : args) argv.push_back(a.c_str());
  try {
    app.parse(static_cast<int>(argv.size()), const_cast<char**>(argv.data()));
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return 0;
}

TEST(QuantizeFlagsTest, EveryFlagSetsItsOption) {
  QuantizeOptions o;
  CLI::App app;
  AddQuantizeFlags(&app, &o);
  ASSERT_EQ(Parse(app, {"--model", "/m", "--calib", "/c.txt", "--out", "/o", "--method", "turboboa",
                        "--joint-rows", "8", "--residual-alpha", "0.5", "--value-block",
                        "--value-damp", "0.1", "--act-order-rows", "--no-sequential", "--qk-hessian",
                        "softmax", "--refine-iters", "2", "--requant-passes", "1", "--scale-init",
                        "hessian", "--bits", "3", "--format", "dequantized", "--group-size", "64",
                        "--sym", "--mse", "--act-order", "--static-groups", "--damp", "0.02",
                        "--samples", "16", "--seq-len", "128", "--seed", "7", "--eval", "/v.txt",
                        "--eval-seq-len", "512", "--eval-windows", "3", "--skip-fp-eval", "--force",
                        "--partial-groups", "--device", "cuda:1"}),
            0);
  EXPECT_EQ(o.model_dir, "/m");
  EXPECT_EQ(o.calib_path, "/c.txt");
  EXPECT_EQ(o.out_dir, "/o");
  EXPECT_EQ(o.method, "turboboa");
  EXPECT_EQ(o.joint_rows, 8);
  EXPECT_EQ(o.residual_alpha, 0.5);
  EXPECT_TRUE(o.value_block);
  EXPECT_EQ(o.value_damp, 0.1);
  EXPECT_TRUE(o.act_order_rows);
  EXPECT_FALSE(o.sequential);
  EXPECT_EQ(o.qk_hessian, "softmax");
  EXPECT_EQ(o.refine_iters, 2);
  EXPECT_EQ(o.requant_passes, 1);
  EXPECT_EQ(o.scale_init, "hessian");
  EXPECT_EQ(o.gptq.grid.bits, 3);
  EXPECT_EQ(o.format, "dequantized");
  EXPECT_EQ(o.gptq.group_size, 64);
  EXPECT_TRUE(o.gptq.grid.sym);
  EXPECT_TRUE(o.gptq.grid.mse);
  EXPECT_TRUE(o.gptq.act_order);
  EXPECT_TRUE(o.gptq.static_groups);
  EXPECT_EQ(o.gptq.damp, 0.02);
  EXPECT_EQ(o.samples, 16);
  EXPECT_EQ(o.seq_len, 128);
  EXPECT_EQ(o.seed, 7u);
  EXPECT_EQ(o.eval_path, "/v.txt");
  EXPECT_EQ(o.eval_seq_len, 512);
  EXPECT_EQ(o.eval_max_windows, 3);
  EXPECT_FALSE(o.eval_fp);
  EXPECT_TRUE(o.force);
  EXPECT_TRUE(o.partial_groups);
  EXPECT_EQ(o.device, "cuda:1");
}

TEST(QuantizeFlagsTest, UnsetFlagsKeepTheDefaultsAndPathsAreRequired) {
  QuantizeOptions o;
  CLI::App app;
  AddQuantizeFlags(&app, &o);
  ASSERT_EQ(Parse(app, {"--model", "/m", "--calib", "/c", "--out", "/o"}), 0);
  QuantizeOptions defaults;
  EXPECT_EQ(o.method, defaults.method);
  EXPECT_EQ(o.gptq.grid.bits, defaults.gptq.grid.bits);
  EXPECT_EQ(o.gptq.group_size, defaults.gptq.group_size);
  EXPECT_FALSE(o.value_block);
  EXPECT_EQ(o.refine_iters, defaults.refine_iters);
  EXPECT_EQ(o.scale_init, defaults.scale_init);
  EXPECT_TRUE(o.sequential);
  EXPECT_TRUE(o.eval_fp);
  QuantizeOptions p;
  CLI::App missing;
  AddQuantizeFlags(&missing, &p);
  EXPECT_NE(Parse(missing, {"--model", "/m", "--calib", "/c"}), 0);  // no --out
}

// Command lines from before the value block was off by default keep their meaning; both at once are
// refused.
TEST(QuantizeFlagsTest, OldNoValueBlockFlagIsTheDefault) {
  QuantizeOptions o;
  o.value_block = true;  // as the old default was
  CLI::App app;
  AddQuantizeFlags(&app, &o);
  ASSERT_EQ(Parse(app, {"--model", "/m", "--calib", "/c", "--out", "/o", "--no-value-block"}), 0);
  EXPECT_FALSE(o.value_block);
  QuantizeOptions p;
  CLI::App both;
  AddQuantizeFlags(&both, &p);
  EXPECT_NE(Parse(both, {"--model", "/m", "--calib", "/c", "--out", "/o", "--value-block",
                         "--no-value-block"}),
            0);
}

// The flags are exactly the option list's (and the hidden old --no-value-block): none lost, none
// added by hand.
TEST(QuantizeFlagsTest, FlagsAreTheOptionListsFlags) {
  QuantizeOptions o;
  CLI::App app;
  AddQuantizeFlags(&app, &o);
  std::set<std::string> registered;
  for (const CLI::Option* opt : app.get_options()) {
    for (const std::string& name : opt->get_lnames()) registered.insert("--" + name);
  }
  registered.erase("--help");
  registered.erase("--no-value-block");
  std::set<std::string> listed;
  VisitQuantizeOptions(o, [&](const OptionField& f, const auto&) {
    if (!f.flag.empty()) listed.insert(std::string(f.flag));
  });
  EXPECT_EQ(registered, listed);
}

}  // namespace
}  // namespace ptq::client
