// The ptq-coordinator binary as deployed: killed mid-job it re-queues the job on restart and runs it
// to success; SIGTERM stops it gracefully (exit 0), putting the running job back in the queue.
#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "grpc/health/v1/health.grpc.pb.h"
#include "ptq/v1/job_service.grpc.pb.h"
#include "server/sqlite_job_store.h"
#include "tests/test_paths.h"

namespace {
namespace fs = std::filesystem;
using namespace std::chrono_literals;

std::string TempPath(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("ptq_coordinator_main_test_" + name);
  for (const char* suffix : {"", "-wal", "-shm"}) fs::remove_all(p.string() + suffix);
  return p.string();
}

int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

// One ptq-coordinator process; killed on destruction if still running.
class CoordinatorProcess {
 public:
  CoordinatorProcess(const std::string& address, const std::string& store, const std::string& log) {
    pid_ = ::fork();
    if (pid_ == 0) {
      FILE* out = std::freopen(log.c_str(), "a", stderr);
      (void)out;
      const std::string binary = std::string(PTQ_BINARY_DIR) + "/ptq-coordinator";
      ::execl(binary.c_str(), binary.c_str(), "--listen", address.c_str(), "--store", store.c_str(),
              "--threads", "2", "--insecure", static_cast<char*>(nullptr));
      ::_exit(127);
    }
  }
  ~CoordinatorProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  void Signal(int signal) { ::kill(pid_, signal); }
  // The exit status as waitpid reports it, waiting up to `timeout`; -1 if it is still running.
  int Wait(std::chrono::seconds timeout) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < end) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return status;
      }
      std::this_thread::sleep_for(20ms);
    }
    return -1;
  }

 private:
  pid_t pid_ = -1;
};

bool AwaitServing(const std::shared_ptr<grpc::Channel>& channel) {
  auto health = grpc::health::v1::Health::NewStub(channel);
  for (int i = 0; i < 300; ++i) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + 1s);
    grpc::health::v1::HealthCheckResponse response;
    if (health->Check(&context, {}, &response).ok() &&
        response.status() == grpc::health::v1::HealthCheckResponse::SERVING) {
      return true;
    }
    std::this_thread::sleep_for(100ms);
  }
  return false;
}

ptq::v1::JobSpec Spec(const std::string& out) {
  ptq::v1::JobSpec spec;
  spec.set_model_path(ptq::testing::DemoModelDir());
  spec.set_calib_path(ptq::testing::DemoCalibText());
  spec.set_output_path(out);
  spec.set_group_size(64);
  spec.set_samples(64);
  spec.set_seq_len(128);
  return spec;
}

// Submits a job and returns its id once it has reported its first layer.
std::string SubmitAndAwaitProgress(ptq::v1::JobService::Stub& stub, const std::string& out) {
  grpc::ClientContext context;
  ptq::v1::SubmitRequest request;
  *request.mutable_spec() = Spec(out);
  ptq::v1::Job job;
  grpc::Status status = stub.Submit(&context, request, &job);
  EXPECT_TRUE(status.ok()) << status.error_message();
  grpc::ClientContext watch_context;
  ptq::v1::WatchJobRequest watch;
  watch.set_job_id(job.id());
  auto reader = stub.Watch(&watch_context, watch);
  ptq::v1::JobEvent event;
  bool progressed = false;
  while (!progressed && reader->Read(&event)) progressed = event.has_layer();
  EXPECT_TRUE(progressed);
  watch_context.TryCancel();
  reader->Finish().IgnoreError();
  return job.id();
}

TEST(CoordinatorMainTest, KilledMidJobRequeuesOnRestartAndSigtermStopsGracefully) {
  const std::string address = "127.0.0.1:" + std::to_string(FreePort());
  const std::string store = TempPath("store.db");
  const std::string log = TempPath("coordinator.log");
  const std::string out = TempPath("out");
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  auto stub = ptq::v1::JobService::NewStub(channel);

  std::string id;
  {
    CoordinatorProcess first(address, store, log);
    ASSERT_TRUE(AwaitServing(channel)) << "see " << log;
    id = SubmitAndAwaitProgress(*stub, out);
    first.Signal(SIGKILL);
    ASSERT_NE(first.Wait(10s), -1);
  }
  EXPECT_FALSE(fs::exists(out + "/config.json"));

  CoordinatorProcess second(address, store, log);
  ASSERT_TRUE(AwaitServing(channel)) << "see " << log;
  {
    grpc::ClientContext context;
    ptq::v1::WatchJobRequest watch;
    watch.set_job_id(id);
    auto reader = stub->Watch(&context, watch);
    ptq::v1::JobEvent event, last;
    while (reader->Read(&event)) last = event;
    ASSERT_TRUE(reader->Finish().ok());
    ASSERT_TRUE(last.has_state());
    EXPECT_EQ(last.state().state(), ptq::v1::JOB_STATE_SUCCEEDED) << last.state().error();
    EXPECT_TRUE(fs::exists(out + "/config.json"));
  }

  // SIGTERM mid-job: exit 0, and the job is QUEUED again in the store for the next start.
  const std::string id2 = SubmitAndAwaitProgress(*stub, TempPath("out2"));
  second.Signal(SIGTERM);
  const int status = second.Wait(60s);
  ASSERT_NE(status, -1) << "no exit after SIGTERM";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  auto reopened = ptq::server::SqliteJobStore::Open(store);
  ASSERT_TRUE(reopened.ok());
  auto job = (*reopened)->Get(id2);
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->state(), ptq::v1::JOB_STATE_QUEUED);
  auto logs = (*reopened)->Logs(id, 0);
  ASSERT_TRUE(logs.ok());
  bool requeued = false;
  for (const auto& line : *logs) requeued |= line.text().find("re-queued") != std::string::npos;
  EXPECT_TRUE(requeued);
}

}  // namespace
