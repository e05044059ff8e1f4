// Progress of a long step on stderr: "block 2/4 · mlp.down_proj · 12.3 s elapsed · ETA 30 s".
// Progress is counted in units of work (e.g. linear layers); the ETA assumes the remaining units cost
// what the finished ones did.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace ptq {

class Progress {
 public:
  // `job_id` labels the exported metrics (the "quantize" task's layers done and progress ratio).
  Progress(std::string task, int64_t total_units, std::string job_id = "local");
  // Marks `units` more as done and prints one line with `detail`.
  void Advance(int64_t units, const std::string& detail);
  double ElapsedSeconds() const;

 private:
  std::string task_;
  std::string job_id_;
  int64_t total_;
  int64_t done_ = 0;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace ptq
