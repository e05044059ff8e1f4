#include "server/sqlite_job_store.h"

#include <sqlite3.h>

#include "absl/strings/str_cat.h"

namespace ptq::server {
namespace {

// Version 1: jobs and job_logs. Version 2 adds job_events (a version-1 store gets it on open: every
// statement below is idempotent). Bump with a migration when they change.
constexpr int kSchemaVersion = 2;

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS jobs (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,   -- insertion order: List and the FIFO queue follow it
  id TEXT NOT NULL UNIQUE,
  state INTEGER NOT NULL,                  -- ptq.v1.JobState
  spec BLOB NOT NULL,                      -- serialized ptq.v1.JobSpec
  last_finished_block INTEGER NOT NULL,    -- 0-based; -1 before the first block is done
  num_blocks INTEGER NOT NULL,
  layers_done INTEGER NOT NULL,
  layers_total INTEGER NOT NULL,
  artefact_path TEXT NOT NULL,             -- the checkpoint folder once written
  error TEXT NOT NULL,
  result BLOB NOT NULL,                    -- serialized ptq.v1.JobResult
  created_ms INTEGER NOT NULL,
  started_ms INTEGER NOT NULL,
  ended_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS job_logs (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  job_id TEXT NOT NULL,
  time_ms INTEGER NOT NULL,
  text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS job_logs_by_job ON job_logs (job_id, seq);
CREATE TABLE IF NOT EXISTS job_events (
  job_id TEXT NOT NULL,
  sequence INTEGER NOT NULL,               -- 1, 2, ... per job (JobEvent.sequence)
  event BLOB NOT NULL,                     -- serialized ptq.v1.JobEvent
  PRIMARY KEY (job_id, sequence)
);
)sql";

constexpr const char* kJobColumns =
    "id, state, spec, last_finished_block, num_blocks, layers_done, layers_total, artefact_path, "
    "error, result, created_ms, started_ms, ended_ms";

// A prepared statement, finalized on destruction.
class Statement {
 public:
  Statement(sqlite3* db, const std::string& sql) {
    rc_ = sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt_, nullptr);
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  bool ok() const { return rc_ == SQLITE_OK; }
  sqlite3_stmt* get() { return stmt_; }
  void Bind(int i, const std::string& text) {
    sqlite3_bind_text(stmt_, i, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
  }
  void BindBlob(int i, const std::string& bytes) {
    sqlite3_bind_blob(stmt_, i, bytes.data(), static_cast<int>(bytes.size()), SQLITE_TRANSIENT);
  }
  void Bind(int i, int64_t value) { sqlite3_bind_int64(stmt_, i, value); }
  std::string Text(int i) {
    const auto* p = sqlite3_column_blob(stmt_, i);  // blob access works for TEXT and BLOB alike
    const int n = sqlite3_column_bytes(stmt_, i);
    return p == nullptr ? std::string() : std::string(static_cast<const char*>(p), n);
  }
  int64_t Int(int i) { return sqlite3_column_int64(stmt_, i); }

 private:
  sqlite3_stmt* stmt_ = nullptr;
  int rc_;
};

// Binds a job's columns as ?1..?13 in kJobColumns order.
void BindJob(Statement& st, const v1::Job& job) {
  st.Bind(1, job.id());
  st.Bind(2, static_cast<int64_t>(job.state()));
  st.BindBlob(3, job.spec().SerializeAsString());
  st.Bind(4, job.blocks_done() - 1);
  st.Bind(5, job.num_blocks());
  st.Bind(6, job.layers_done());
  st.Bind(7, job.layers_total());
  st.Bind(8, job.result().checkpoint_path());
  st.Bind(9, job.error());
  st.BindBlob(10, job.result().SerializeAsString());
  st.Bind(11, job.create_time_ms());
  st.Bind(12, job.start_time_ms());
  st.Bind(13, job.end_time_ms());
}

absl::StatusOr<v1::Job> ReadJob(Statement& st) {
  v1::Job job;
  job.set_id(st.Text(0));
  job.set_state(static_cast<v1::JobState>(st.Int(1)));
  if (!job.mutable_spec()->ParseFromString(st.Text(2))) {
    return absl::DataLossError(absl::StrCat("job ", job.id(), ": stored spec does not parse"));
  }
  job.set_blocks_done(st.Int(3) + 1);
  job.set_num_blocks(st.Int(4));
  job.set_layers_done(st.Int(5));
  job.set_layers_total(st.Int(6));
  job.set_error(st.Text(8));
  if (!job.mutable_result()->ParseFromString(st.Text(9))) {
    return absl::DataLossError(absl::StrCat("job ", job.id(), ": stored result does not parse"));
  }
  job.mutable_result()->set_checkpoint_path(st.Text(7));
  job.set_create_time_ms(st.Int(10));
  job.set_start_time_ms(st.Int(11));
  job.set_end_time_ms(st.Int(12));
  return job;
}

}  // namespace

absl::StatusOr<std::unique_ptr<SqliteJobStore>> SqliteJobStore::Open(const std::string& path) {
  sqlite3* db = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &db,
                                 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                                 nullptr);
  if (rc != SQLITE_OK) {
    std::string message = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close(db);
    return absl::UnavailableError(absl::StrCat("cannot open job store ", path, ": ", message));
  }
  std::unique_ptr<SqliteJobStore> store(new SqliteJobStore(db, path));
  sqlite3_busy_timeout(db, 5000);
  // WAL: readers do not block the writer; FULL: a commit is synced before it returns.
  if (auto s = store->Exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"); !s.ok()) return s;
  if (auto s = store->Exec("BEGIN IMMEDIATE;"); !s.ok()) return s;
  int64_t version = 0;
  {
    Statement st(db, "PRAGMA user_version;");
    if (st.ok() && sqlite3_step(st.get()) == SQLITE_ROW) version = st.Int(0);
  }
  if (version > kSchemaVersion) {
    store->Exec("ROLLBACK;").IgnoreError();
    return absl::FailedPreconditionError(absl::StrCat("job store ", path, " has schema version ",
                                                      version, ", newer than this coordinator's ",
                                                      kSchemaVersion));
  }
  if (auto s = store->Exec(kSchema); !s.ok()) return s;
  if (auto s = store->Exec(absl::StrCat("PRAGMA user_version=", kSchemaVersion, ";").c_str());
      !s.ok()) {
    return s;
  }
  if (auto s = store->Exec("COMMIT;"); !s.ok()) return s;
  return store;
}

SqliteJobStore::~SqliteJobStore() { sqlite3_close(db_); }

absl::Status SqliteJobStore::Error(const std::string& what) const {
  return absl::InternalError(absl::StrCat("job store ", path_, ": ", what, ": ", sqlite3_errmsg(db_)));
}

absl::Status SqliteJobStore::Exec(const char* sql) {
  std::lock_guard<std::mutex> lock(mu_);
  char* message = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &message) != SQLITE_OK) {
    std::string text = message != nullptr ? message : "unknown error";
    sqlite3_free(message);
    return absl::InternalError(absl::StrCat("job store ", path_, ": ", text));
  }
  return absl::OkStatus();
}

absl::Status SqliteJobStore::Insert(const v1::Job& job) {
  std::lock_guard<std::mutex> lock(mu_);
  Statement st(db_, absl::StrCat("INSERT INTO jobs (", kJobColumns,
                                 ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13);"));
  if (!st.ok()) return Error("prepare insert");
  BindJob(st, job);
  const int rc = sqlite3_step(st.get());
  if (rc == SQLITE_CONSTRAINT) return absl::AlreadyExistsError(absl::StrCat("job ", job.id(), " exists"));
  if (rc != SQLITE_DONE) return Error(absl::StrCat("insert job ", job.id()));
  return absl::OkStatus();
}

absl::Status SqliteJobStore::Update(const v1::Job& job) {
  std::lock_guard<std::mutex> lock(mu_);
  Statement st(db_,
               "UPDATE jobs SET state = ?2, spec = ?3, last_finished_block = ?4, num_blocks = ?5, "
               "layers_done = ?6, layers_total = ?7, artefact_path = ?8, error = ?9, result = ?10, "
               "created_ms = ?11, started_ms = ?12, ended_ms = ?13 WHERE id = ?1;");
  if (!st.ok()) return Error("prepare update");
  BindJob(st, job);
  if (sqlite3_step(st.get()) != SQLITE_DONE) return Error(absl::StrCat("update job ", job.id()));
  if (sqlite3_changes(db_) == 0) return absl::NotFoundError(absl::StrCat("no job ", job.id()));
  return absl::OkStatus();
}

absl::StatusOr<v1::Job> SqliteJobStore::Get(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  Statement st(db_, absl::StrCat("SELECT ", kJobColumns, " FROM jobs WHERE id = ?1;"));
  if (!st.ok()) return Error("prepare get");
  st.Bind(1, id);
  const int rc = sqlite3_step(st.get());
  if (rc == SQLITE_DONE) return absl::NotFoundError(absl::StrCat("no job ", id));
  if (rc != SQLITE_ROW) return Error(absl::StrCat("get job ", id));
  return ReadJob(st);
}

absl::StatusOr<std::vector<v1::Job>> SqliteJobStore::List() {
  std::lock_guard<std::mutex> lock(mu_);
  Statement st(db_, absl::StrCat("SELECT ", kJobColumns, " FROM jobs ORDER BY seq;"));
  if (!st.ok()) return Error("prepare list");
  std::vector<v1::Job> jobs;
  int rc;
  while ((rc = sqlite3_step(st.get())) == SQLITE_ROW) {
    auto job = ReadJob(st);
    if (!job.ok()) return job.status();
    jobs.push_back(*std::move(job));
  }
  if (rc != SQLITE_DONE) return Error("list jobs");
  return jobs;
}

absl::StatusOr<std::map<v1::JobState, int64_t>> SqliteJobStore::CountByState() {
  std::lock_guard<std::mutex> lock(mu_);
  Statement st(db_, "SELECT state, COUNT(*) FROM jobs GROUP BY state;");
  if (!st.ok()) return Error("prepare count");
  std::map<v1::JobState, int64_t> counts;
  int rc;
  while ((rc = sqlite3_step(st.get())) == SQLITE_ROW) {
    counts[static_cast<v1::JobState>(st.Int(0))] = st.Int(1);
  }
  if (rc != SQLITE_DONE) return Error("count jobs");
  return counts;
}

absl::Status SqliteJobStore::AppendLog(const std::string& id, const v1::LogLine& line) {
  std::lock_guard<std::mutex> lock(mu_);
  Statement st(db_, "INSERT INTO job_logs (job_id, time_ms, text) VALUES (?1, ?2, ?3);");
  if (!st.ok()) return Error("prepare log");
  st.Bind(1, id);
  st.Bind(2, line.time_ms());
  st.Bind(3, line.text());
  if (sqlite3_step(st.get()) != SQLITE_DONE) return Error(absl::StrCat("log of job ", id));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<v1::LogLine>> SqliteJobStore::Logs(const std::string& id,
                                                              int64_t first) {
  std::lock_guard<std::mutex> lock(mu_);
  Statement st(db_,
               "SELECT time_ms, text FROM job_logs WHERE job_id = ?1 ORDER BY seq "
               "LIMIT -1 OFFSET ?2;");
  if (!st.ok()) return Error("prepare logs");
  st.Bind(1, id);
  st.Bind(2, first);
  std::vector<v1::LogLine> lines;
  int rc;
  while ((rc = sqlite3_step(st.get())) == SQLITE_ROW) {
    v1::LogLine line;
    line.set_time_ms(st.Int(0));
    line.set_text(st.Text(1));
    lines.push_back(std::move(line));
  }
  if (rc != SQLITE_DONE) return Error(absl::StrCat("logs of job ", id));
  return lines;
}

absl::StatusOr<int64_t> SqliteJobStore::LastEventSequenceLocked(const std::string& id) {
  Statement st(db_, "SELECT COALESCE(MAX(sequence), 0) FROM job_events WHERE job_id = ?1;");
  if (!st.ok()) return Error("prepare last event");
  st.Bind(1, id);
  if (sqlite3_step(st.get()) != SQLITE_ROW) return Error(absl::StrCat("last event of job ", id));
  return st.Int(0);
}

absl::StatusOr<int64_t> SqliteJobStore::LastEventSequence(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  return LastEventSequenceLocked(id);
}

absl::StatusOr<int64_t> SqliteJobStore::AppendEvent(const v1::JobEvent& event) {
  std::lock_guard<std::mutex> lock(mu_);
  // One connection behind mu_: nothing appends between reading the last sequence and inserting.
  auto last = LastEventSequenceLocked(event.job_id());
  if (!last.ok()) return last.status();
  v1::JobEvent stored = event;
  stored.clear_sequence();  // the column holds it
  Statement st(db_, "INSERT INTO job_events (job_id, sequence, event) VALUES (?1, ?2, ?3);");
  if (!st.ok()) return Error("prepare event");
  st.Bind(1, event.job_id());
  st.Bind(2, *last + 1);
  st.BindBlob(3, stored.SerializeAsString());
  if (sqlite3_step(st.get()) != SQLITE_DONE) return Error(absl::StrCat("event of job ", event.job_id()));
  return *last + 1;
}

absl::StatusOr<std::vector<v1::JobEvent>> SqliteJobStore::Events(const std::string& id,
                                                                 int64_t after) {
  std::lock_guard<std::mutex> lock(mu_);
  Statement st(db_,
               "SELECT sequence, event FROM job_events WHERE job_id = ?1 AND sequence > ?2 "
               "ORDER BY sequence;");
  if (!st.ok()) return Error("prepare events");
  st.Bind(1, id);
  st.Bind(2, after);
  std::vector<v1::JobEvent> events;
  int rc;
  while ((rc = sqlite3_step(st.get())) == SQLITE_ROW) {
    v1::JobEvent event;
    if (!event.ParseFromString(st.Text(1))) {
      return absl::DataLossError(absl::StrCat("job ", id, ": stored event ", st.Int(0),
                                              " does not parse"));
    }
    event.set_sequence(st.Int(0));
    events.push_back(std::move(event));
  }
  if (rc != SQLITE_DONE) return Error(absl::StrCat("events of job ", id));
  return events;
}

}  // namespace ptq::server
