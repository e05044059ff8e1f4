// JobStore in one embedded SQLite file. WAL journal with synchronous=FULL: every Insert, Update,
// AppendLog and AppendEvent is its own transaction and is on disk when it returns, so a killed coordinator loses
// nothing it has acknowledged.
//
// Thread safety: one connection, serialized by a mutex; callable from any thread.
#pragma once

#include <memory>
#include <mutex>
#include <string>

#include "server/job_store.h"

struct sqlite3;

namespace ptq::server {

class SqliteJobStore final : public JobStore {
 public:
  // Opens (creating if needed) the store at `path`.
  static absl::StatusOr<std::unique_ptr<SqliteJobStore>> Open(const std::string& path);
  ~SqliteJobStore() override;
  SqliteJobStore(const SqliteJobStore&) = delete;
  SqliteJobStore& operator=(const SqliteJobStore&) = delete;

  absl::Status Insert(const v1::Job& job) override;
  absl::Status Update(const v1::Job& job) override;
  absl::StatusOr<v1::Job> Get(const std::string& id) override;
  absl::StatusOr<std::vector<v1::Job>> List() override;
  absl::StatusOr<std::map<v1::JobState, int64_t>> CountByState() override;
  absl::Status AppendLog(const std::string& id, const v1::LogLine& line) override;
  absl::StatusOr<std::vector<v1::LogLine>> Logs(const std::string& id, int64_t first) override;
  absl::StatusOr<int64_t> AppendEvent(const v1::JobEvent& event) override;
  absl::StatusOr<std::vector<v1::JobEvent>> Events(const std::string& id, int64_t after) override;
  absl::StatusOr<int64_t> LastEventSequence(const std::string& id) override;

 private:
  SqliteJobStore(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  absl::Status Exec(const char* sql);
  absl::Status Error(const std::string& what) const;  // REQUIRES: mu_ held
  absl::StatusOr<int64_t> LastEventSequenceLocked(const std::string& id);  // REQUIRES: mu_ held

  std::mutex mu_;
  sqlite3* db_;
  const std::string path_;
};

}  // namespace ptq::server
