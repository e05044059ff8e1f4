// The coordinator end to end over loopback gRPC: a JobService on 127.0.0.1 (port 0) with the
// embedded worker runs tiny jobs on the demo model.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <thread>

#include "common/metric_names.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "ptq/v1/job_service.grpc.pb.h"
#include "server/coordinator.h"
#include "tests/test_paths.h"
#include "core/checkpoint/output_folder.h"
#include "core/pipeline/quantize_pipeline.h"
#include "worker/quantize_spec.h"

namespace ptq::server {
namespace {
namespace fs = std::filesystem;

std::string TempPath(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("ptq_job_service_test_" + name);
  fs::remove_all(p);
  for (const std::string& staging : StagingFolders(p.string())) fs::remove_all(staging);
  return p.string();
}

// The tiny job of the brief: GPTQ W4 g64 on 8 windows of 64 tokens, no evaluation.
QuantizeOptions TinyOptions(const std::string& out) {
  QuantizeOptions o;
  o.model_dir = testing::DemoModelDir();
  o.calib_path = testing::DemoCalibText();
  o.out_dir = out;
  o.method = "gptq";
  o.samples = 8;
  o.seq_len = 64;
  o.gptq.grid.bits = 4;
  o.gptq.group_size = 64;
  return o;
}

std::string ReadBytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::set<std::string> SafetensorsFiles(const std::string& dir) {
  std::set<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() == ".safetensors") names.insert(entry.path().filename().string());
  }
  return names;
}

class JobServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CoordinatorOptions options;
    options.listen_address = "127.0.0.1:0";
    options.store_path = TempPath("store.db");
    fs::remove(options.store_path + "-wal");
    fs::remove(options.store_path + "-shm");
    auto c = Coordinator::Start(options, registry_);
    ASSERT_TRUE(c.ok()) << c.status();
    coordinator_ = *std::move(c);
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(coordinator_->port()),
                                   grpc::InsecureChannelCredentials());
    stub_ = v1::JobService::NewStub(channel_);
  }

  v1::Job Submit(const QuantizeOptions& options) {
    grpc::ClientContext context;
    v1::SubmitRequest request;
    *request.mutable_spec() = worker::SpecFromQuantizeOptions(options);
    v1::Job job;
    grpc::Status status = stub_->Submit(&context, request, &job);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return job;
  }

  // Every event of the job until the stream ends; `on_event` may act on them as they come.
  std::vector<v1::JobEvent> WatchAll(const std::string& id,
                                     const std::function<void(const v1::JobEvent&)>& on_event = {}) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(5));
    v1::WatchJobRequest request;
    request.set_job_id(id);
    auto reader = stub_->Watch(&context, request);
    std::vector<v1::JobEvent> events;
    v1::JobEvent event;
    while (reader->Read(&event)) {
      if (on_event) on_event(event);
      events.push_back(event);
    }
    grpc::Status status = reader->Finish();
    EXPECT_TRUE(status.ok()) << status.error_message();
    return events;
  }

  metrics::Registry registry_;
  std::unique_ptr<Coordinator> coordinator_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::JobService::Stub> stub_;
};

TEST_F(JobServiceTest, HealthCheckReportsServing) {
  auto health = grpc::health::v1::Health::NewStub(channel_);
  grpc::ClientContext context;
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status status = health->Check(&context, grpc::health::v1::HealthCheckRequest(), &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING);
}

// Server reflection lists the JobService. The reflection messages are not compiled here (libgrpc++
// registers them itself), so the call is generic: ServerReflectionRequest{list_services: ""} is the
// two bytes 0x3a 0x00, and the response carries the service names as plain strings.
TEST_F(JobServiceTest, ReflectionListsTheJobService) {
  grpc::GenericStub stub(channel_);
  grpc::CompletionQueue cq;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  auto await = [&cq](intptr_t expected) {
    void* tag = nullptr;
    bool ok = false;
    EXPECT_TRUE(cq.Next(&tag, &ok));
    EXPECT_EQ(reinterpret_cast<intptr_t>(tag), expected);
    return ok;
  };
  auto call = stub.PrepareCall(
      &context, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  call->StartCall(reinterpret_cast<void*>(1));
  ASSERT_TRUE(await(1));
  grpc::Slice request_bytes(std::string("\x3a\x00", 2));
  grpc::ByteBuffer request(&request_bytes, 1);
  call->Write(request, reinterpret_cast<void*>(2));
  ASSERT_TRUE(await(2));
  call->WritesDone(reinterpret_cast<void*>(3));
  ASSERT_TRUE(await(3));
  grpc::ByteBuffer response;
  call->Read(&response, reinterpret_cast<void*>(4));
  ASSERT_TRUE(await(4));
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  await(5);
  EXPECT_TRUE(status.ok()) << status.error_message();
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(response.Dump(&slices).ok());
  std::string bytes;
  for (const auto& slice : slices) bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  EXPECT_NE(bytes.find("ptq.v1.JobService"), std::string::npos);
  EXPECT_NE(bytes.find("grpc.health.v1.Health"), std::string::npos);
}

TEST_F(JobServiceTest, GptqJobStreamsProgressAndWritesTheSameCheckpointAsRunQuantize) {
  const std::string out = TempPath("served");
  v1::Job job = Submit(TinyOptions(out));
  ASSERT_FALSE(job.id().empty());
  EXPECT_EQ(job.state(), v1::JOB_STATE_QUEUED);

  std::vector<v1::JobEvent> events = WatchAll(job.id());
  ASSERT_GE(events.size(), 2u);
  ASSERT_TRUE(events.front().has_state());
  int64_t last_layers_done = 0, layer_events = 0, block_events = 0;
  for (const auto& e : events) {
    EXPECT_EQ(e.job_id(), job.id());
    if (e.has_layer()) {
      EXPECT_EQ(e.layer().layers_done(), last_layers_done + 1) << e.layer().layer();
      last_layers_done = e.layer().layers_done();
      EXPECT_EQ(e.layer().layers_total(), 4 * 7);
      EXPECT_FALSE(e.layer().layer().empty());
      EXPECT_GT(e.layer().loss(), 0);
      EXPECT_GE(e.layer().eta_seconds(), 0);
      ++layer_events;
    }
    if (e.has_block()) ++block_events;
  }
  EXPECT_EQ(layer_events, 4 * 7);
  EXPECT_EQ(block_events, 4);
  ASSERT_TRUE(events.back().has_state());
  const v1::Job& done = events.back().state();
  ASSERT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << done.error();
  EXPECT_EQ(done.blocks_done(), 4);
  EXPECT_EQ(done.result().layers_size(), 4 * 7);
  EXPECT_EQ(fs::path(done.result().checkpoint_path()), fs::absolute(out));

  // The same options run directly give the same tensors, byte for byte.
  const std::string direct_out = TempPath("direct");
  auto direct = RunQuantize(TinyOptions(direct_out));
  ASSERT_TRUE(direct.ok()) << direct.status();
  const std::set<std::string> files = SafetensorsFiles(out);
  ASSERT_FALSE(files.empty());
  EXPECT_EQ(files, SafetensorsFiles(direct_out));
  for (const std::string& name : files) {
    EXPECT_TRUE(ReadBytes(fs::path(out) / name) == ReadBytes(fs::path(direct_out) / name)) << name;
  }

  // Get, List, and a Watch of the finished job (replays the final state, then ends).
  grpc::ClientContext context;
  v1::GetJobRequest get;
  get.set_job_id(job.id());
  v1::Job got;
  ASSERT_TRUE(stub_->Get(&context, get, &got).ok());
  EXPECT_EQ(got.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(got.result().checkpoint_path(), done.result().checkpoint_path());
  std::vector<v1::JobEvent> replay = WatchAll(job.id());
  ASSERT_EQ(replay.size(), 1u);
  EXPECT_EQ(replay[0].state().state(), v1::JOB_STATE_SUCCEEDED);
  grpc::ClientContext list_context;
  v1::ListJobsResponse list;
  ASSERT_TRUE(stub_->List(&list_context, v1::ListJobsRequest(), &list).ok());
  ASSERT_EQ(list.jobs_size(), 1);
  EXPECT_EQ(list.jobs(0).id(), job.id());
  EXPECT_EQ(registry_.GetGauge("ptq_jobs", "", {{"state", "succeeded"}}).Value(), 1);
  EXPECT_EQ(registry_.GetGauge("ptq_jobs", "", {{"state", "running"}}).Value(), 0);

  // The log tells the story.
  grpc::ClientContext logs_context;
  v1::LogsRequest logs;
  logs.set_job_id(job.id());
  auto reader = stub_->Logs(&logs_context, logs);
  std::vector<std::string> lines;
  v1::LogLine line;
  while (reader->Read(&line)) lines.push_back(line.text());
  ASSERT_TRUE(reader->Finish().ok());
  ASSERT_GE(lines.size(), 3u);
  EXPECT_NE(lines.front().find("queued"), std::string::npos);
  EXPECT_NE(lines.back().find("succeeded"), std::string::npos);
}

TEST_F(JobServiceTest, CancelOfARunningJobEndsCancelledWithoutACheckpoint) {
  const std::string out = TempPath("cancelled");
  QuantizeOptions options = TinyOptions(out);
  options.samples = 32;  // a little longer, so the job is surely still running
  v1::Job job = Submit(options);
  // `Logs --follow` started now streams until the job has finished.
  std::vector<std::string> followed;
  grpc::Status follow_status;
  std::thread follower([&] {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(5));
    v1::LogsRequest logs;
    logs.set_job_id(job.id());
    logs.set_follow(true);
    auto reader = stub_->Logs(&context, logs);
    v1::LogLine line;
    while (reader->Read(&line)) followed.push_back(line.text());
    follow_status = reader->Finish();
  });
  bool cancel_sent = false;
  std::vector<v1::JobEvent> events = WatchAll(job.id(), [&](const v1::JobEvent& e) {
    if (!e.has_layer() || cancel_sent) return;
    cancel_sent = true;
    grpc::ClientContext context;
    v1::CancelJobRequest cancel;
    cancel.set_job_id(job.id());
    v1::Job response;
    grpc::Status status = stub_->Cancel(&context, cancel, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response.state(), v1::JOB_STATE_RUNNING);
  });
  ASSERT_TRUE(cancel_sent);
  ASSERT_TRUE(events.back().has_state());
  EXPECT_EQ(events.back().state().state(), v1::JOB_STATE_CANCELLED);
  EXPECT_NE(events.back().state().error().find("cancelled"), std::string::npos);
  int64_t layers = 0;
  for (const auto& e : events) layers += e.has_layer();
  EXPECT_LT(layers, 4 * 7);
  EXPECT_FALSE(fs::exists(out));
  EXPECT_TRUE(StagingFolders(out).empty());
  follower.join();
  EXPECT_TRUE(follow_status.ok()) << follow_status.error_message();
  ASSERT_GE(followed.size(), 3u);
  EXPECT_NE(followed.front().find("queued"), std::string::npos);
  EXPECT_NE(followed.back().find("cancelled: cancelled in block"), std::string::npos) << followed.back();
  // Cancelling again is a no-op.
  grpc::ClientContext context;
  v1::CancelJobRequest cancel;
  cancel.set_job_id(job.id());
  v1::Job again;
  ASSERT_TRUE(stub_->Cancel(&context, cancel, &again).ok());
  EXPECT_EQ(again.state(), v1::JOB_STATE_CANCELLED);
}

TEST_F(JobServiceTest, BadSpecsAreInvalidArgumentWithOneReadableLine) {
  struct Case {
    const char* name;
    std::function<void(v1::JobSpec&)> change;
    const char* words;
  };
  const Case cases[] = {
      {"bits 5", [](v1::JobSpec& s) { s.set_bits(5); }, "bits 5"},
      {"missing model", [](v1::JobSpec& s) { s.set_model_path("/nonexistent/model"); },
       "/nonexistent/model"},
      {"no model", [](v1::JobSpec& s) { s.clear_model_path(); }, "model_path is required"},
      {"missing calib", [](v1::JobSpec& s) { s.set_calib_path("/nonexistent/c.txt"); },
       "/nonexistent/c.txt"},
      {"method", [](v1::JobSpec& s) { s.set_method("awq"); }, "awq"},
      {"group", [](v1::JobSpec& s) { s.set_group_size(100); }, "does not divide"},
  };
  for (const Case& c : cases) {
    v1::SubmitRequest request;
    *request.mutable_spec() = worker::SpecFromQuantizeOptions(TinyOptions(TempPath("bad")));
    c.change(*request.mutable_spec());
    grpc::ClientContext context;
    v1::Job job;
    grpc::Status status = stub_->Submit(&context, request, &job);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.name;
    EXPECT_NE(status.error_message().find(c.words), std::string::npos)
        << c.name << ": " << status.error_message();
    EXPECT_EQ(status.error_message().find('\n'), std::string::npos) << c.name;
  }
  grpc::ClientContext context;
  v1::ListJobsResponse list;
  ASSERT_TRUE(stub_->List(&context, v1::ListJobsRequest(), &list).ok());
  EXPECT_EQ(list.jobs_size(), 0);
}

// A coordinator confined to the repository and the temp folder: a job naming a path elsewhere, or
// escaping through "..", is PERMISSION_DENIED and never queued.
TEST(ConfinedJobServiceTest, PathsOutsideTheAllowedRootsArePermissionDenied) {
  metrics::Registry registry;
  CoordinatorOptions options;
  options.listen_address = "127.0.0.1:0";
  options.store_path = TempPath("confined.db");
  options.allowed_roots = {testing::SourceDir(), fs::temp_directory_path().string()};
  auto c = Coordinator::Start(options, registry);
  ASSERT_TRUE(c.ok()) << c.status();
  auto stub = v1::JobService::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string((*c)->port()), grpc::InsecureChannelCredentials()));
  auto submit = [&](const std::function<void(v1::JobSpec&)>& change) {
    v1::SubmitRequest request;
    *request.mutable_spec() = worker::SpecFromQuantizeOptions(TinyOptions(TempPath("confined")));
    change(*request.mutable_spec());
    grpc::ClientContext context;
    v1::Job job;
    return stub->Submit(&context, request, &job);
  };
  grpc::Status out = submit([](v1::JobSpec& s) { s.set_output_path("/etc/ptq-checkpoint"); });
  EXPECT_EQ(out.error_code(), grpc::StatusCode::PERMISSION_DENIED) << out.error_message();
  EXPECT_NE(out.error_message().find("output '/etc/ptq-checkpoint'"), std::string::npos)
      << out.error_message();
  grpc::Status dots = submit([](v1::JobSpec& s) {
    s.set_calib_path(testing::SourceDir() + "/../../etc/passwd");
  });
  EXPECT_EQ(dots.error_code(), grpc::StatusCode::PERMISSION_DENIED) << dots.error_message();
  EXPECT_TRUE(submit([](v1::JobSpec&) {}).ok());  // inside the roots: accepted
  (*c)->Shutdown();
}

// With a token file: no or a wrong token is UNAUTHENTICATED, a read token may list but not submit,
// an admin token may submit; health stays open for probes.
TEST(TokenJobServiceTest, CallsNeedAValidTokenOfTheRightRole) {
  const std::string token_file = TempPath("tokens");
  {
    std::ofstream f(token_file);
    f << "admin-0123456789abcdef admin\nreader-0123456789abcdef read\n";
  }
  metrics::Registry registry;
  CoordinatorOptions options;
  options.listen_address = "127.0.0.1:0";
  options.store_path = TempPath("tokens.db");
  options.tokens_path = token_file;
  auto c = Coordinator::Start(options, registry);
  ASSERT_TRUE(c.ok()) << c.status();
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string((*c)->port()),
                                     grpc::InsecureChannelCredentials());
  auto stub = v1::JobService::NewStub(channel);
  auto list = [&](const std::string& token) {
    grpc::ClientContext context;
    if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
    v1::ListJobsResponse response;
    return stub->List(&context, v1::ListJobsRequest(), &response).error_code();
  };
  auto submit = [&](const std::string& token) {
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Bearer " + token);
    v1::SubmitRequest request;
    *request.mutable_spec() = worker::SpecFromQuantizeOptions(TinyOptions(TempPath("tokened")));
    v1::Job job;
    return stub->Submit(&context, request, &job).error_code();
  };
  EXPECT_EQ(list(""), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(list("reader-0123456789abcdeX"), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(list("reader-0123456789abcdef"), grpc::StatusCode::OK);
  EXPECT_EQ(submit("reader-0123456789abcdef"), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(submit("admin-0123456789abcdef"), grpc::StatusCode::OK);
  auto health = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext context;
  grpc::health::v1::HealthCheckRequest request;
  grpc::health::v1::HealthCheckResponse response;
  EXPECT_TRUE(health->Check(&context, request, &response).ok());
  (*c)->Shutdown();
}

TEST_F(JobServiceTest, OneClientMayQueueOnlySoManyJobsAndRequestsAreBounded) {
  // The default limit (CoordinatorOptions::max_queued_per_client) is 16: the first job runs, 16 queue,
  // the next is refused; cancelling one makes room again.
  QuantizeOptions options = TinyOptions(TempPath("limited"));
  options.samples = 64;
  std::vector<std::string> ids;
  grpc::Status refused;
  for (int i = 0; i < 19 && refused.ok(); ++i) {
    grpc::ClientContext context;
    v1::SubmitRequest request;
    options.out_dir = TempPath("limited-" + std::to_string(i));
    *request.mutable_spec() = worker::SpecFromQuantizeOptions(options);
    v1::Job job;
    refused = stub_->Submit(&context, request, &job);
    if (refused.ok()) ids.push_back(job.id());
  }
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << refused.error_message();
  EXPECT_EQ(ids.size(), 17u);  // 1 running (or about to) + 16 queued
  auto cancel = [&](const std::string& id) {
    grpc::ClientContext context;
    v1::CancelJobRequest request;
    request.set_job_id(id);
    v1::Job job;
    return stub_->Cancel(&context, request, &job);
  };
  EXPECT_TRUE(cancel(ids.back()).ok());
  {
    grpc::ClientContext context;
    v1::SubmitRequest request;
    *request.mutable_spec() = worker::SpecFromQuantizeOptions(options);
    v1::Job job;
    grpc::Status again = stub_->Submit(&context, request, &job);
    EXPECT_TRUE(again.ok()) << again.error_message();
    if (again.ok()) ids.push_back(job.id());
  }
  for (const std::string& id : ids) cancel(id);

  // A request over the size limit never reaches the service.
  grpc::ClientContext context;
  v1::SubmitRequest request;
  *request.mutable_spec() = worker::SpecFromQuantizeOptions(options);
  request.mutable_spec()->set_model_path(std::string(2 << 20, 'x'));
  v1::Job job;
  EXPECT_EQ(stub_->Submit(&context, request, &job).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
}

TEST_F(JobServiceTest, UnknownJobIsNotFound) {
  grpc::ClientContext get_context;
  v1::GetJobRequest get;
  get.set_job_id("job-nonexistent");
  v1::Job job;
  EXPECT_EQ(stub_->Get(&get_context, get, &job).error_code(), grpc::StatusCode::NOT_FOUND);
  grpc::ClientContext cancel_context;
  v1::CancelJobRequest cancel;
  cancel.set_job_id("job-nonexistent");
  EXPECT_EQ(stub_->Cancel(&cancel_context, cancel, &job).error_code(), grpc::StatusCode::NOT_FOUND);
  grpc::ClientContext watch_context;
  v1::WatchJobRequest watch;
  watch.set_job_id("job-nonexistent");
  auto reader = stub_->Watch(&watch_context, watch);
  v1::JobEvent event;
  EXPECT_FALSE(reader->Read(&event));
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::NOT_FOUND);
}

}  // namespace
}  // namespace ptq::server
