// A bounded load test on loopback (issue 9): while one job runs, 200 concurrent Watch streams (50 of
// them reading slowly), 40 Submit + Cancel pairs and a stream of List / Get calls hit one coordinator.
// The job's checkpoint must equal the one RunQuantize writes alone, every stream must end with the
// job's final state or an error status (none silently cut), every churn job must end CANCELLED, and
// the process's peak memory must stay bounded. Prints the figures.
#include <ATen/Parallel.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

#include "ptq/v1/job_service.grpc.pb.h"
#include "server/coordinator.h"
#include "tests/test_paths.h"
#include "core/checkpoint/output_folder.h"
#include "core/pipeline/quantize_pipeline.h"
#include "worker/quantize_spec.h"

namespace ptq::server {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::string TempPath(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("ptq_load_test_" + name);
  fs::remove_all(p);
  for (const std::string& staging : StagingFolders(p.string())) fs::remove_all(staging);
  return p.string();
}

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

// Peak resident memory of this process (VmHWM), bytes.
int64_t PeakRssBytes() {
  std::ifstream in("/proc/self/status");
  std::string key;
  while (in >> key) {
    if (key == "VmHWM:") {
      int64_t kb = 0;
      in >> kb;
      return kb * 1024;
    }
    in.ignore(1 << 12, '\n');
  }
  return -1;
}

QuantizeOptions JobOptions(const std::string& out) {
  QuantizeOptions o;
  o.model_dir = testing::DemoModelDir();
  o.calib_path = testing::DemoCalibText();
  o.out_dir = out;
  o.method = "gptq";
  o.samples = 48;
  o.seq_len = 128;
  o.gptq.grid.bits = 4;
  o.gptq.group_size = 64;
  return o;
}

TEST(CoordinatorLoadTest, ManyWatchersAndSubmitCancelChurnLeaveTheJobUnchanged) {
  at::set_num_threads(1);
  // The reference, alone; then the peak memory baseline.
  const std::string reference = TempPath("reference");
  ASSERT_TRUE(RunQuantize(JobOptions(reference)).ok());
  const int64_t rss_before = PeakRssBytes();

  metrics::Registry registry;
  CoordinatorOptions options;
  options.listen_address = "127.0.0.1:0";
  options.store_path = TempPath("store.db");
  options.max_queued_per_client = 0;
  auto coordinator = Coordinator::Start(options, registry);
  ASSERT_TRUE(coordinator.ok()) << coordinator.status();
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string((*coordinator)->port()),
                                     grpc::InsecureChannelCredentials());
  auto stub = v1::JobService::NewStub(channel);

  const std::string out = TempPath("served");
  v1::Job job;
  {
    grpc::ClientContext context;
    v1::SubmitRequest request;
    *request.mutable_spec() = worker::SpecFromQuantizeOptions(JobOptions(out));
    ASSERT_TRUE(stub->Submit(&context, request, &job).ok());
  }
  const auto start = Clock::now();

  constexpr int kWatchers = 200, kSlow = 50, kChurn = 40;
  std::atomic<int> saw_final{0}, error_status{0}, cut_silently{0};
  std::atomic<int64_t> events{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < kWatchers; ++w) {
    threads.emplace_back([&, w] {
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(10));
      v1::WatchJobRequest request;
      request.set_job_id(job.id());
      auto reader = stub->Watch(&context, request);
      v1::JobEvent event;
      v1::JobState last = v1::JOB_STATE_UNSPECIFIED;
      while (reader->Read(&event)) {
        ++events;
        if (event.has_state()) last = event.state().state();
        if (w < kSlow) std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      grpc::Status status = reader->Finish();
      if (!status.ok()) {
        ++error_status;
      } else if (last == v1::JOB_STATE_SUCCEEDED) {
        ++saw_final;
      } else {
        ++cut_silently;
      }
    });
  }
  std::atomic<int> churn_cancelled{0};
  threads.emplace_back([&] {
    for (int i = 0; i < kChurn; ++i) {
      grpc::ClientContext context;
      v1::SubmitRequest request;
      *request.mutable_spec() =
          worker::SpecFromQuantizeOptions(JobOptions(TempPath("churn-" + std::to_string(i))));
      v1::Job queued;
      if (!stub->Submit(&context, request, &queued).ok()) continue;
      grpc::ClientContext cancel_context;
      v1::CancelJobRequest cancel;
      cancel.set_job_id(queued.id());
      v1::Job cancelled;
      if (stub->Cancel(&cancel_context, cancel, &cancelled).ok() &&
          cancelled.state() == v1::JOB_STATE_CANCELLED) {
        ++churn_cancelled;
      }
    }
  });
  std::atomic<bool> done{false};
  std::atomic<int> reads{0};
  threads.emplace_back([&] {
    while (!done.load()) {
      grpc::ClientContext context;
      v1::ListJobsResponse list;
      if (stub->List(&context, v1::ListJobsRequest(), &list).ok()) ++reads;
      grpc::ClientContext get_context;
      v1::GetJobRequest get;
      get.set_job_id(job.id());
      v1::Job got;
      if (stub->Get(&get_context, get, &got).ok()) ++reads;
    }
  });
  for (int i = 0; i < kWatchers + 1; ++i) threads[i].join();
  done.store(true);
  threads.back().join();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const int64_t rss_peak = PeakRssBytes();

  std::printf(
      "load: %d Watch streams (%d slow) + %d submit/cancel pairs + %d List/Get calls during a "
      "%.1f s job; %lld events delivered; streams: %d saw SUCCEEDED, %d error status, %d cut "
      "silently; peak RSS %.0f MiB -> %.0f MiB\n",
      kWatchers, kSlow, kChurn, reads.load(), seconds, static_cast<long long>(events.load()),
      saw_final.load(), error_status.load(), cut_silently.load(), rss_before / 1048576.0,
      rss_peak / 1048576.0);
  EXPECT_EQ(cut_silently.load(), 0);
  EXPECT_EQ(saw_final.load() + error_status.load(), kWatchers);
  EXPECT_GE(saw_final.load(), kWatchers - kSlow);  // fast readers must all see the end
  EXPECT_EQ(churn_cancelled.load(), kChurn);
  EXPECT_GT(reads.load(), 0);
  EXPECT_LT(rss_peak - rss_before, int64_t{512} << 20);
  ASSERT_TRUE(fs::exists(out + "/model.safetensors"));
  EXPECT_EQ(ReadBytes(out + "/model.safetensors"), ReadBytes(reference + "/model.safetensors"))
      << "the job's checkpoint changed under load";
  (*coordinator)->Shutdown();
  (*coordinator)->Wait();
}

}  // namespace
}  // namespace ptq::server
