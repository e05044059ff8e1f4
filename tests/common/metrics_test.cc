// The metrics registry: exact text exposition format 0.0.4, concurrent updates, and a scrape over HTTP.
#include "common/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <thread>
#include <vector>

#include "common/metric_names.h"
#include "common/metrics_server.h"
#include "gtest/gtest.h"

namespace ptq::metrics {
namespace {

TEST(MetricsTest, RendersTheTextFormatExactly) {
  Registry registry;
  registry.GetCounter("a_requests_total", "Requests handled.", {{"code", "200"}}).Increment(3);
  registry.GetCounter("a_requests_total", "ignored later help", {{"code", "500"}}).Increment(0.5);
  registry.GetGauge("b_temperature_celsius", "Line1\nback\\slash").Set(-2.25);
  registry.GetGauge("c_label_escapes", "Escapes.", {{"path", "C:\\x \"q\"\nz"}}).Set(1e20);
  Histogram& h = registry.GetHistogram("d_duration_seconds", "Durations.", {{"op", "x"}}, {0.5, 2});
  h.Observe(0.5);  // le is inclusive: lands in the 0.5 bucket
  h.Observe(1);
  h.Observe(7);

  // Written by hand from the format description: families sorted by name, HELP escapes \\ and \n,
  // label values escape \\, \" and \n, cumulative buckets with le appended after the other labels.
  const std::string expected =
      "# HELP a_requests_total Requests handled.\n"
      "# TYPE a_requests_total counter\n"
      "a_requests_total{code=\"200\"} 3\n"
      "a_requests_total{code=\"500\"} 0.5\n"
      "# HELP b_temperature_celsius Line1\\nback\\\\slash\n"
      "# TYPE b_temperature_celsius gauge\n"
      "b_temperature_celsius -2.25\n"
      "# HELP c_label_escapes Escapes.\n"
      "# TYPE c_label_escapes gauge\n"
      "c_label_escapes{path=\"C:\\\\x \\\"q\\\"\\nz\"} 1e+20\n"
      "# HELP d_duration_seconds Durations.\n"
      "# TYPE d_duration_seconds histogram\n"
      "d_duration_seconds_bucket{op=\"x\",le=\"0.5\"} 1\n"
      "d_duration_seconds_bucket{op=\"x\",le=\"2\"} 2\n"
      "d_duration_seconds_bucket{op=\"x\",le=\"+Inf\"} 3\n"
      "d_duration_seconds_sum{op=\"x\"} 8.5\n"
      "d_duration_seconds_count{op=\"x\"} 3\n";
  EXPECT_EQ(registry.Render(), expected);
}

TEST(MetricsTest, FormatsSpecialValues) {
  EXPECT_EQ(FormatValue(0), "0");
  EXPECT_EQ(FormatValue(42), "42");
  EXPECT_EQ(FormatValue(0.1), "0.1");
  EXPECT_EQ(FormatValue(1.0 / 0.0), "+Inf");
  EXPECT_EQ(FormatValue(-1.0 / 0.0), "-Inf");
  EXPECT_EQ(FormatValue(0.0 / 0.0), "NaN");
}

TEST(MetricsTest, CountersIgnoreNegativeAmountsAndTypeClashesAreNotRendered) {
  Registry registry;
  Counter& c = registry.GetCounter("x_total", "X.");
  c.Increment(2);
  c.Increment(-5);
  EXPECT_EQ(c.Value(), 2);
  registry.GetGauge("x_total", "clash").Set(9);  // detached, never rendered
  EXPECT_EQ(registry.Render(), "# HELP x_total X.\n# TYPE x_total counter\nx_total 2\n");
}

TEST(MetricsTest, ConcurrentIncrementsAreAllCounted) {
  Registry registry;
  constexpr int kThreads = 4, kPerThread = 20000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&registry, t] {
      for (int i = 0; i < kPerThread; ++i) {
        // Children created concurrently too: two label values shared by all threads.
        registry.GetCounter("n_total", "N.", {{"k", std::to_string(i % 2)}}).Increment();
        registry.GetGauge("g", "G.").Add(1);
        registry.GetHistogram("h_seconds", "H.", {}, {1}).Observe(t % 2 == 0 ? 0.5 : 3);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(registry.GetCounter("n_total", "N.", {{"k", "0"}}).Value(), kThreads * kPerThread / 2);
  EXPECT_EQ(registry.GetCounter("n_total", "N.", {{"k", "1"}}).Value(), kThreads * kPerThread / 2);
  EXPECT_EQ(registry.GetGauge("g", "G.").Value(), kThreads * kPerThread);
  Histogram::Snapshot s = registry.GetHistogram("h_seconds", "H.", {}, {1}).Read();
  EXPECT_EQ(s.count, static_cast<uint64_t>(kThreads * kPerThread));
  EXPECT_EQ(s.cumulative_counts[0], static_cast<uint64_t>(kThreads * kPerThread / 2));
}

TEST(MetricsTest, DeclaredNamesFollowPrometheusConventions) {
  for (const names::MetricSpec* spec : names::kAll) {
    std::string name = spec->name;
    EXPECT_EQ(name.rfind("ptq_", 0), 0u) << name;
    const bool total = name.size() > 6 && name.substr(name.size() - 6) == "_total";
    EXPECT_EQ(total, spec->type == MetricType::kCounter) << name << ": counters, and only they, end in _total";
  }
}

// Sends a GET and returns the whole response (headers and body).
std::string HttpGet(int port, const std::string& path) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return "connect failed";
  }
  std::string request = "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  (void)!write(fd, request.data(), request.size());
  std::string response;
  char buffer[4096];
  ssize_t n;
  while ((n = read(fd, buffer, sizeof(buffer))) > 0) response.append(buffer, n);
  close(fd);
  return response;
}

TEST(MetricsServerTest, ServesTheRegistryOverHttp) {
  Registry registry;
  auto server = MetricsServer::Start("127.0.0.1:0", registry);
  if (!server.ok() && server.status().code() == absl::StatusCode::kUnimplemented) {
    GTEST_SKIP() << server.status().message();
  }
  ASSERT_TRUE(server.ok()) << server.status().message();
  ASSERT_GT((*server)->port(), 0);
  CounterFor(registry, names::kBlocksDone, {{"job_id", "local"}}).Increment(2);
  std::string response = HttpGet((*server)->port(), "/metrics");
  EXPECT_NE(response.find("200 OK"), std::string::npos) << response;
  EXPECT_NE(response.find("text/plain; version=0.0.4"), std::string::npos) << response;
  EXPECT_NE(response.find("\r\n\r\n" + registry.Render().substr(0, 20)), std::string::npos);
  EXPECT_NE(response.find("ptq_blocks_done_total{job_id=\"local\"} 2\n"), std::string::npos) << response;
  EXPECT_NE(response.find("ptq_process_resident_memory_bytes "), std::string::npos) << response;
  // The series moves between scrapes.
  CounterFor(registry, names::kBlocksDone, {{"job_id", "local"}}).Increment();
  response = HttpGet((*server)->port(), "/metrics");
  EXPECT_NE(response.find("ptq_blocks_done_total{job_id=\"local\"} 3\n"), std::string::npos) << response;
}

TEST(MetricsServerTest, RejectsABadAddress) {
  Registry registry;
  EXPECT_EQ(MetricsServer::Start("no-port", registry).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace ptq::metrics
