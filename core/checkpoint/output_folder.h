// The output folder of a job: refuses to overwrite a model unless forced, stages everything in a
// sibling "<name>.partial-XXXXXX" folder of its own and renames it into place only when complete.
//
// The staging folder belongs to one run. When the coordinator restarts a job, the abandoned attempt
// may still be running beside the new one: a shared staging name let the old attempt's failure
// cleanup delete the new attempt's half-written checkpoint. Each run now owns a unique folder and
// holds an flock on it while alive, so a later run clears only leftovers whose owner is gone.
//
// Only the latest run may commit: Prepare records its staging folder's name in "<name>.owner" (a
// fencing token, written and checked under an flock of that file), and Commit refuses when a later
// run has claimed the output since. Otherwise an abandoned attempt that had not yet noticed its
// cancellation could replace the new attempt's checkpoint, or delete its block store, after it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ptq {

class OutputFolder {
 public:
  // Fails if `final_dir` already holds a model (config.json or *.safetensors) and !force, or if the
  // staging folder cannot be created. Removes staging folders that earlier runs left for the same
  // output and whose processes are gone.
  static absl::StatusOr<OutputFolder> Prepare(const std::string& final_dir, bool force);

  OutputFolder(OutputFolder&& other) noexcept;
  OutputFolder& operator=(OutputFolder&& other) noexcept;
  OutputFolder(const OutputFolder&) = delete;
  OutputFolder& operator=(const OutputFolder&) = delete;
  // Removes the staging folder unless it was committed: a failed or cancelled run leaves nothing.
  ~OutputFolder();

  // Where files are written until Commit (empty after it).
  const std::string& staging_dir() const { return staging_dir_; }
  const std::string& final_dir() const { return final_dir_; }
  // ResourceExhausted, naming the folder and both sizes, when its file system has less than `bytes`
  // free for unprivileged users.
  absl::Status CheckFreeSpace(uint64_t bytes) const;
  // fsyncs the staging folder and renames it over the final name (an existing one is replaced only
  // when forced, and only now, after the new model is complete), then removes `obsolete` (the
  // block store). Aborted, touching nothing, when a later run has claimed the output.
  absl::Status Commit(const std::vector<std::string>& obsolete = {});

 private:
  OutputFolder(std::string final_dir, std::string staging_dir, int lock_fd)
      : final_dir_(std::move(final_dir)), staging_dir_(std::move(staging_dir)), lock_fd_(lock_fd) {}
  void Release();

  std::string final_dir_;
  std::string staging_dir_;
  int lock_fd_ = -1;  // the staging folder, opened and flock'ed while this run owns it
};

// "<final_dir>.owner": the staging folder name of the run allowed to commit.
std::string OwnerFile(const std::string& final_dir);

// The staging folders present for `final_dir` (any owner): for tests and diagnostics.
std::vector<std::string> StagingFolders(const std::string& final_dir);

// "<output>.blocks" (output normalised as OutputFolder does): the finished blocks a run of the same
// job resumes from (core/checkpoint/block_store.h).
std::string BlockStoreDir(const std::string& output_dir);
// Removes the folder of `output_dir`'s finished blocks, if any.
void RemoveBlockStore(const std::string& output_dir);

}  // namespace ptq
