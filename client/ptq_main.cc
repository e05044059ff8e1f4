// `ptq`: the command line of PTQ Service. `quantize` runs the whole job in this process; `eval`
// measures a model's perplexity; submit, watch, status, list, cancel and logs talk to a coordinator
// (client/service_commands.h). Flags are parsed here and passed down as values.
#include <ATen/Parallel.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <sys/resource.h>
#include <unistd.h>
#include <iostream>
#include <optional>
#include <thread>

#include "common/malloc_reuse.h"
#include "common/passive_waiting.h"
#include "client/cli_error.h"
#include "client/quantize_flags.h"
#if defined(PTQ_WITH_SERVICE)
#include "client/local_workers.h"
#include "client/service_commands.h"
#endif
#include "common/blas_description.h"
#include "common/logging.h"
#include "common/metrics_server.h"
#include "common/tokenizer.h"
#include "nlohmann/json.hpp"
#include "core/checkpoint/dense_export.h"
#include "core/model/llama_model.h"
#include "core/model/perplexity.h"
#include "core/pipeline/progress.h"
#include "core/pipeline/quantize_pipeline.h"
#include "core/pipeline/device.h"
#include "core/pipeline/torch_errors.h"

namespace {

using ptq::QuantizeOptions;

double PeakRssMiB() {
  struct rusage usage;
  ::getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

using ptq::client::Fail;

int RunEval(const std::string& model_dir, const std::string& text, int64_t seq_len,
            int64_t max_windows, const std::string& device_name, bool json) {
  auto start = std::chrono::steady_clock::now();
  auto device = ptq::ResolveDevice(device_name);
  if (!device.ok()) return Fail(device.status());
  auto model = ptq::LlamaModel::Open(model_dir);
  if (!model.ok()) return Fail(model.status());
  (*model)->SetDevice(*device);
  auto tokenizer = ptq::TokenizerForModel(model_dir, (*model)->config().vocab_size);
  if (!tokenizer.ok()) return Fail(tokenizer.status());
  auto tokens = ptq::LoadTokens(text, **tokenizer, (*model)->config().vocab_size);
  if (!tokens.ok()) return Fail(tokens.status());
  ptq::PerplexityOptions po;
  po.seq_len = seq_len;
  po.max_windows = max_windows;
  // The text is evaluated in chunks of windows, each through every block: the step count is known
  // once the evaluation has split the text.
  std::optional<ptq::Progress> progress;
  po.on_progress = [&](int64_t done, int64_t total) {
    if (!progress) progress.emplace("eval", total);
    progress->Advance(1, "step " + std::to_string(done) + "/" + std::to_string(total));
  };
  auto result = ptq::CatchTorchErrors([&] { return ptq::EvaluatePerplexity(**model, *tokens, po); });
  if (!result.ok()) return Fail(result.status());
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (json) {
    nlohmann::json j = {{"model", model_dir},       {"text", text},
                        {"seq_len", seq_len},       {"windows", result->windows},
                        {"perplexity", result->perplexity}, {"seconds", seconds}};
    std::cout << j.dump() << std::endl;
  } else {
    std::printf("perplexity %.4f on %s (%lld windows of %lld tokens), %.1f s\n", result->perplexity,
                text.c_str(), static_cast<long long>(result->windows),
                static_cast<long long>(seq_len), seconds);
  }
  return 0;
}

int RunQuantize(const QuantizeOptions& o, bool json, int workers, char** argv) {
  ptq::JobHooks hooks;
#if defined(PTQ_WITH_SERVICE)
  std::unique_ptr<ptq::client::LocalWorkerGroup> group;
  if (workers > 1 || ptq::client::LocalWorkerRank().has_value()) {
    auto started = ptq::client::LocalWorkerGroup::Start(workers, argv);
    if (!started.ok()) return Fail(started.status());
    group = std::move(*started);
    hooks.group = &group->collective();
  }
  auto report = ptq::CatchTorchErrors([&] { return ptq::RunQuantize(o, hooks); });
  if (group != nullptr && group->rank() != 0) return report.ok() ? 0 : Fail(report.status());
  if (group != nullptr) {
    if (!report.ok()) group->KillChildren();
    absl::Status workers_status = group->Wait();
    if (report.ok() && !workers_status.ok()) return Fail(workers_status);
  }
#else
  (void)argv;
  if (workers > 1) {
    return Fail(absl::FailedPreconditionError(
        "--workers needs the service build (this ptq was built with -DPTQ_SERVICE=OFF)"));
  }
  auto report = ptq::CatchTorchErrors([&] { return ptq::RunQuantize(o, hooks); });
#endif
  if (!report.ok()) return Fail(report.status());
  const auto& r = *report;
  if (json) {
    nlohmann::json layers = nlohmann::json::array();
    for (const auto& l : r.layers) {
      layers.push_back({{"name", l.name}, {"loss", l.loss}, {"relative_loss", l.relative_loss},
                        {"rtn_relative_loss", l.rtn_relative_loss}, {"seconds", l.seconds}});
    }
    nlohmann::json j = ptq::CheckpointOptionsJson(o);
    j.update({
        {"model", o.model_dir},
        {"calib", o.calib_path},
        {"out", r.out_dir},
        {"seconds", r.seconds},
        {"phase_seconds",
         {{"forward", r.forward_seconds},
          {"statistics", r.statistics_seconds},
          {"quantize", r.quantize_seconds},
          {"eval", r.eval_seconds},
          {"write", r.write_seconds}}},
        {"block_seconds", r.block_seconds},
        {"workers", r.workers},
        {"collective_seconds", r.collective_seconds},
        {"collective_bytes_rank0", r.collective_bytes},
        {"peak_rss_mib", PeakRssMiB()},
        {"forward_cache_mib", static_cast<double>(r.forward_cache_bytes) / (1 << 20)},
        {"threads", at::get_num_threads()},
        {"blas", ptq::LoadedBlasDescription()},
        {"layers", layers}});
    if (r.perplexity_fp >= 0) j["perplexity_fp"] = r.perplexity_fp;
    if (r.perplexity_quant >= 0) j["perplexity_quant"] = r.perplexity_quant;
    if (!r.serving_json.empty()) j["serving"] = nlohmann::json::parse(r.serving_json);
    std::cout << j.dump() << std::endl;
  } else {
    std::printf("\n%s W%d g%lld on %s\n", o.method.c_str(), o.gptq.grid.bits,
                static_cast<long long>(o.gptq.group_size), o.model_dir.c_str());
    if (r.perplexity_fp >= 0) std::printf("  perplexity before: %.4f\n", r.perplexity_fp);
    if (r.perplexity_quant >= 0) std::printf("  perplexity after:  %.4f\n", r.perplexity_quant);
    std::printf("  time: %.1f s (quantization %.1f s, statistics %.1f s, forward %.1f s, eval %.1f s)\n",
                r.seconds, r.quantize_seconds, r.statistics_seconds, r.forward_seconds,
                r.eval_seconds);
    std::printf("  peak memory: %.0f MiB (of which block-stage outputs kept: %.0f MiB)\n", PeakRssMiB(),
                static_cast<double>(r.forward_cache_bytes) / (1 << 20));
    std::printf("  checkpoint: %s\n", r.out_dir.c_str());
    if (!r.serving_json.empty()) {  // which runtimes load it (also in ptq_report.json)
      const nlohmann::json serving = nlohmann::json::parse(r.serving_json);
      std::printf("  format: %s\n", serving["format"].get<std::string>().c_str());
      for (const auto& t : serving["runtimes"]) {
        std::printf("    %s: %s%s\n", t["runtime"].get<std::string>().c_str(),
                    t["loads"].get<bool>() ? "loads, " : "does not load, ",
                    t["kernel"].get<std::string>().c_str());
      }
      for (const auto& w : serving["warnings"]) {
        std::printf("    warning: %s\n", w.get<std::string>().c_str());
      }
    }
    std::printf("  per-layer report: %s/ptq_report.svg (and .json)\n", r.out_dir.c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  ptq::PreferPassiveThreadWaiting(argv);
  ptq::KeepFreedMemoryForReuse();
  CLI::App app{"PTQ Service: post-training weight quantization of large language models"};
  app.require_subcommand(1);
  int threads = static_cast<int>(std::thread::hardware_concurrency());
  std::string log_level = "info";
  app.add_option("--threads", threads, "CPU threads for tensor work (default: all cores)");
  app.add_option("--log-level", log_level, "debug, info, warn or error")->capture_default_str();

  QuantizeOptions q;
  bool q_json = false;
  auto* quantize = app.add_subcommand("quantize", "quantize a model in this process");
  ptq::client::AddQuantizeFlags(quantize, &q);
  quantize->add_flag("--json", q_json, "print one JSON object");
  int q_workers = 1;
  quantize->add_option("--workers", q_workers,
                       "worker processes on this machine sharing the job (Gloo over loopback)")
      ->capture_default_str();
  std::string q_metrics;
  quantize->add_option("--metrics", q_metrics,
                       "serve Prometheus metrics at http://HOST:PORT/metrics while it runs");

  std::string e_model, e_text;
  int64_t e_seq_len = 256, e_windows = 0;
  bool e_json = false;
  auto* eval = app.add_subcommand("eval", "perplexity of a model on a text");
  eval->add_option("--model", e_model, "model folder (Hugging Face or a ptq output)")->required();
  eval->add_option("--text", e_text, "evaluation text (or .ids token file)")->required();
  eval->add_option("--seq-len", e_seq_len, "tokens per window")->capture_default_str();
  eval->add_option("--windows", e_windows, "evaluate at most this many windows");
  eval->add_flag("--json", e_json, "print one JSON object");
  std::string e_device = "cpu";
  eval->add_option("--device", e_device, "cpu, cuda or cuda:N")->capture_default_str();

  std::string d_model, d_out;
  bool d_force = false;
  auto* dequantize = app.add_subcommand(
      "dequantize", "rewrite a GPTQ or compressed-tensors checkpoint as a float32 model");
  dequantize->add_option("--model", d_model, "quantized checkpoint folder")->required();
  dequantize->add_option("--out", d_out, "output folder")->required();
  dequantize->add_flag("--force", d_force, "replace a model already in --out");

#if defined(PTQ_WITH_SERVICE)
  ptq::client::ServiceCommands service_commands(app);
#endif

  CLI11_PARSE(app, argc, argv);
  // Local workers started by `--workers` leave the talking to rank 0.
#if defined(PTQ_WITH_SERVICE)
  const bool started_worker = ptq::client::LocalWorkerRank().has_value();
#else
  const bool started_worker = false;
#endif
  ptq::InitLogging(started_worker ? std::string("warn") : log_level);
  // libtorch starts with 1 thread in C++; local workers share the cores.
  const int sharing = (*quantize && q_workers > 1) ? q_workers : 1;
  at::set_num_threads(std::max(1, threads / sharing));
#if defined(PTQ_WITH_SERVICE)
  if (auto code = service_commands.RunSelected(); code.has_value()) return *code;
#endif
  std::unique_ptr<ptq::metrics::MetricsServer> metrics_server;
  if (*quantize && !q_metrics.empty() && !started_worker) {
    auto server = ptq::metrics::MetricsServer::Start(q_metrics, ptq::metrics::GlobalRegistry());
    if (!server.ok()) {
      std::cerr << "ptq: " << server.status().message() << "\n";
      return 2;
    }
    metrics_server = std::move(*server);
  }
  if (*quantize) return RunQuantize(q, q_json, q_workers, argv);
  if (*eval) return RunEval(e_model, e_text, e_seq_len, e_windows, e_device, e_json);
  if (*dequantize) {
    absl::Status s = ptq::CatchTorchErrors([&] { return ptq::WriteDenseCopy(d_model, d_out, d_force); });
    return s.ok() ? 0 : Fail(s);
  }
  return 2;
}
