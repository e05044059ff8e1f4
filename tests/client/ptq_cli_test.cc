// The `ptq` binary as a user runs it: bad input gives one readable line and a non-zero exit; a good
// run prints one JSON object with the documented fields.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "nlohmann/json.hpp"
#include "tests/cli_run.h"
#include "tests/test_paths.h"

namespace {

using ptq::testing::CliRun;
using ptq::testing::RunPtq;

std::string Demo() { return ptq::testing::DemoModelDir(); }
std::string Calib() { return ptq::testing::DemoCalibText(); }

TEST(PtqCliTest, BadInputGivesOneLineErrorAndNonZeroExit) {
  const std::string out = (std::filesystem::temp_directory_path() / "ptq_cli_test_bad").string();
  const std::pair<std::string, std::string> cases[] = {
      {"quantize --model /nonexistent --calib " + Calib() + " --out " + out, "/nonexistent"},
      {"quantize --model " + Demo() + " --calib " + Calib() + " --out " + out + " --bits 6", "bits 6"},
      {"quantize --model " + Demo() + " --calib " + Calib() + " --out " + out + " --group-size 100",
       "does not divide"},
      {"eval --model " + Demo() + " --text /nonexistent/valid.txt", "/nonexistent/valid.txt"},
      {"quantize --model " + Demo() + " --calib " + Calib() + " --out " + out + " --device gpu",
       "unknown --device \"gpu\""},
  };
  for (const auto& [args, words] : cases) {
    CliRun r = RunPtq(args, true);
    EXPECT_NE(r.exit_code, 0) << args;
    EXPECT_NE(r.out.find("ptq: error: "), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(words), std::string::npos) << r.out;
  }
}

// Where LibTorch has no CUDA (Debian's) or no GPU is visible, asking for one is refused up front,
// naming what is missing, and nothing is written.
TEST(PtqCliTest, CudaWithoutAGpuIsRefusedUpFront) {
  if (std::getenv("PTQ_TEST_HAS_CUDA") != nullptr) GTEST_SKIP() << "a CUDA device is expected here";
  const std::string out = (std::filesystem::temp_directory_path() / "ptq_cli_test_cuda").string();
  std::filesystem::remove_all(out);
  for (const std::string& args :
       {"quantize --model " + Demo() + " --calib " + Calib() + " --out " + out +
            " --group-size 64 --device cuda",
        "eval --model " + Demo() + " --text " + Calib() + " --device cuda:0"}) {
    CliRun r = RunPtq(args, true);
    if (r.exit_code == 0) GTEST_SKIP() << "this LibTorch sees a CUDA device";
    EXPECT_NE(r.out.find("ptq: error: --device cuda"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("no CUDA device is usable"), std::string::npos) << r.out;
  }
  EXPECT_FALSE(std::filesystem::exists(out));
}

TEST(PtqCliTest, QuantizeJsonHasTheDocumentedFields) {
  const std::string out = (std::filesystem::temp_directory_path() / "ptq_cli_test_ok").string();
  CliRun r = RunPtq("quantize --model " + Demo() + " --calib " + Calib() + " --out " + out +
                     " --force --method rtn --bits 4 --group-size 64 --samples 4 --seq-len 64"
                     " --eval " + ptq::testing::DemoValidText() + " --eval-windows 8 --json",
                 false);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_GT(j["perplexity_fp"].get<double>(), 1.0);
  EXPECT_GT(j["perplexity_quant"].get<double>(), j["perplexity_fp"].get<double>() * 0.99);
  EXPECT_GT(j["seconds"].get<double>(), 0.0);
  EXPECT_EQ(j["bits"], 4);
  EXPECT_EQ(j["method"], "rtn");
  // The BLAS whose kernels set the bits: OpenBLAS's own line, naming the core in use.
  if (const char* core = std::getenv("OPENBLAS_CORETYPE"); core != nullptr) {
    EXPECT_NE(j["blas"].get<std::string>().find(core), std::string::npos) << j["blas"];
  } else {
    EXPECT_TRUE(j["blas"].is_string());
  }
  CliRun e = RunPtq("eval --model " + out + " --text " + ptq::testing::DemoValidText() +
                     " --seq-len 64 --windows 4 --json",
                 false);
  ASSERT_EQ(e.exit_code, 0) << e.out;
  EXPECT_GT(nlohmann::json::parse(e.out)["perplexity"].get<double>(), 1.0);
}

}  // namespace
