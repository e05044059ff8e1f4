// The output folder of a job: refuses to overwrite a model unless forced, stages everything in a
// sibling ".partial" folder and renames it into place only when complete.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace ptq::worker {

class OutputFolder {
 public:
  // Fails if `final_dir` already holds a model (config.json or *.safetensors) and !force, or if the
  // staging folder cannot be created.
  static absl::StatusOr<OutputFolder> Prepare(const std::string& final_dir, bool force);
  // Where files are written until Commit.
  const std::string& staging_dir() const { return staging_dir_; }
  const std::string& final_dir() const { return final_dir_; }
  // ResourceExhausted, naming the folder and both sizes, when its file system has less than `bytes`
  // free for unprivileged users.
  absl::Status CheckFreeSpace(uint64_t bytes) const;
  // fsyncs the staging folder and renames it over the final name (an existing one is replaced only
  // when forced, and only now, after the new model is complete).
  absl::Status Commit();

 private:
  OutputFolder(std::string final_dir, std::string staging_dir)
      : final_dir_(std::move(final_dir)), staging_dir_(std::move(staging_dir)) {}
  std::string final_dir_;
  std::string staging_dir_;
};

// Removes the staging folder a stopped run left for `final_dir` (a cancelled or failed job leaves
// nothing behind at the output path). No-op when there is none.
void RemoveStaging(const std::string& final_dir);

}  // namespace ptq::worker
