#include "launcher/sweep/sweep_store.h"

#include <cmath>
#include <sstream>
#include <stdexcept>

#include <sqlite3.h>

#include "core/data/atomic_file.h"
#include "core/data/json_input.h"

namespace iisan::launcher::sweep {
namespace {

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trials(
  id INTEGER PRIMARY KEY, params TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL,
  worker TEXT NOT NULL, heartbeat REAL NOT NULL, started REAL NOT NULL, finished REAL NOT NULL,
  seconds REAL NOT NULL, best REAL, best_epoch INTEGER NOT NULL, epochs INTEGER NOT NULL,
  error TEXT NOT NULL, run_dir TEXT NOT NULL, summary TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS epochs(
  trial INTEGER NOT NULL, epoch INTEGER NOT NULL, metric REAL, record TEXT NOT NULL,
  decision TEXT NOT NULL, PRIMARY KEY(trial, epoch));
)sql";

}  // namespace

struct SweepStore::Impl {
  sqlite3* db = nullptr;
  std::string name;

  [[noreturn]] void Fail(const std::string& what) const {
    throw std::runtime_error(name + ": " + what + ": " + (db ? sqlite3_errmsg(db) : "cannot open") +
                             " (the sweep database must be on a local disk; see `iisan sweep run --db`)");
  }
  void Exec(const char* sql) const {
    char* message = nullptr;
    if (sqlite3_exec(db, sql, nullptr, nullptr, &message) != SQLITE_OK) {
      const std::string text = message ? message : "?";
      sqlite3_free(message);
      throw std::runtime_error(name + ": " + text);
    }
  }

  // One prepared statement, finalised on scope exit.
  struct Statement {
    const Impl& owner;
    sqlite3_stmt* handle = nullptr;
    Statement(const Impl& impl, const char* sql) : owner(impl) {
      if (sqlite3_prepare_v2(impl.db, sql, -1, &handle, nullptr) != SQLITE_OK) impl.Fail("prepare");
    }
    ~Statement() { sqlite3_finalize(handle); }
    void Text(int i, const std::string& value) {
      sqlite3_bind_text(handle, i, value.data(), static_cast<int>(value.size()), SQLITE_TRANSIENT);
    }
    void Int(int i, int64_t value) { sqlite3_bind_int64(handle, i, value); }
    void Real(int i, double value) { sqlite3_bind_double(handle, i, value); }
    void OptionalReal(int i, const std::optional<double>& value) {
      if (value && std::isfinite(*value)) Real(i, *value);
      else sqlite3_bind_null(handle, i);
    }
    bool Step() {
      const int rc = sqlite3_step(handle);
      if (rc == SQLITE_ROW) return true;
      if (rc == SQLITE_DONE) return false;
      owner.Fail("step");
    }
    std::string ColumnText(int i) const {
      const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(handle, i));
      return text ? std::string(text, static_cast<size_t>(sqlite3_column_bytes(handle, i))) : std::string();
    }
    std::optional<double> ColumnOptionalReal(int i) const {
      if (sqlite3_column_type(handle, i) == SQLITE_NULL) return std::nullopt;
      return sqlite3_column_double(handle, i);
    }
  };
};

const char* TrialStatusName(TrialStatus status) {
  switch (status) {
    case TrialStatus::kPending: return "pending";
    case TrialStatus::kRunning: return "running";
    case TrialStatus::kCompleted: return "completed";
    case TrialStatus::kEarlyStopped: return "early_stopped";
    case TrialStatus::kPruned: return "pruned";
    case TrialStatus::kFailed: return "failed";
  }
  return "?";
}

TrialStatus ParseTrialStatus(const std::string& name) {
  for (auto status : {TrialStatus::kPending, TrialStatus::kRunning, TrialStatus::kCompleted,
                      TrialStatus::kEarlyStopped, TrialStatus::kPruned, TrialStatus::kFailed}) {
    if (name == TrialStatusName(status)) return status;
  }
  throw std::runtime_error("unknown trial status \"" + name + "\"");
}

bool IsTerminal(TrialStatus status) { return status != TrialStatus::kPending && status != TrialStatus::kRunning; }

SweepStore::SweepStore(const std::filesystem::path& file, bool read_only) : impl_(std::make_unique<Impl>()), file_(file) {
  impl_->name = file.string();
  const int flags = read_only ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  if (sqlite3_open_v2(file.c_str(), &impl_->db, flags | SQLITE_OPEN_FULLMUTEX, nullptr) != SQLITE_OK) {
    const std::string message = impl_->db ? sqlite3_errmsg(impl_->db) : "out of memory";
    sqlite3_close(impl_->db);
    impl_->db = nullptr;
    throw std::runtime_error(file.string() + ": cannot open the sweep database: " + message);
  }
  sqlite3_busy_timeout(impl_->db, 10000);
  if (!read_only) {
    impl_->Exec("PRAGMA journal_mode=WAL");
    impl_->Exec("PRAGMA synchronous=FULL");
    impl_->Exec(kSchema);
  }
  // A file that is not a sweep database (or a damaged one) fails here, named.
  impl_->Exec("SELECT count(*) FROM trials");
}

SweepStore::~SweepStore() {
  if (impl_ && impl_->db) sqlite3_close(impl_->db);
}

std::optional<std::string> SweepStore::Meta(const std::string& key) const {
  Impl::Statement statement(*impl_, "SELECT value FROM meta WHERE key = ?");
  statement.Text(1, key);
  if (!statement.Step()) return std::nullopt;
  return statement.ColumnText(0);
}

double SweepStore::Started(double fallback) const {
  const auto text = Meta("started");
  if (!text) return fallback;
  try {
    size_t used = 0;
    const double value = std::stod(*text, &used);
    if (used == text->size() && std::isfinite(value)) return value;
  } catch (const std::exception&) {
  }
  throw std::runtime_error(file_.string() + ": the stored start time is not a number; the sweep database is damaged "
                           "(start the sweep in a new --dir)");
}

void SweepStore::SetMeta(const std::string& key, const std::string& value) {
  Impl::Statement statement(*impl_, "INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)");
  statement.Text(1, key);
  statement.Text(2, value);
  statement.Step();
}

std::vector<TrialRow> SweepStore::Trials() const {
  Impl::Statement statement(*impl_,
                            "SELECT id, params, status, attempts, worker, heartbeat, started, finished, seconds, best, "
                            "best_epoch, epochs, error, run_dir, summary FROM trials ORDER BY id");
  std::vector<TrialRow> rows;
  while (statement.Step()) {
    TrialRow row;
    row.id = sqlite3_column_int(statement.handle, 0);
    const std::string source = file_.string() + ": trial " + std::to_string(row.id);
    row.params = data::ParseJsonInput<Json>(statement.ColumnText(1), source + " params");
    row.status = ParseTrialStatus(statement.ColumnText(2));
    row.attempts = sqlite3_column_int(statement.handle, 3);
    row.worker = statement.ColumnText(4);
    row.heartbeat = sqlite3_column_double(statement.handle, 5);
    row.started = sqlite3_column_double(statement.handle, 6);
    row.finished = sqlite3_column_double(statement.handle, 7);
    row.seconds = sqlite3_column_double(statement.handle, 8);
    row.best = statement.ColumnOptionalReal(9);
    row.best_epoch = sqlite3_column_int(statement.handle, 10);
    row.epochs = sqlite3_column_int(statement.handle, 11);
    row.error = statement.ColumnText(12);
    row.run_dir = statement.ColumnText(13);
    const auto summary = statement.ColumnText(14);
    row.summary = summary.empty() ? Json() : data::ParseJsonInput<Json>(summary, source + " summary");
    rows.push_back(std::move(row));
  }
  return rows;
}

std::vector<EpochRow> SweepStore::Epochs() const {
  Impl::Statement statement(*impl_, "SELECT trial, epoch, metric, record, decision FROM epochs ORDER BY trial, epoch");
  std::vector<EpochRow> rows;
  while (statement.Step()) {
    EpochRow row;
    row.trial = sqlite3_column_int(statement.handle, 0);
    row.epoch = sqlite3_column_int(statement.handle, 1);
    row.metric = statement.ColumnOptionalReal(2);
    row.record = data::ParseJsonInput<Json>(statement.ColumnText(3),
                                            file_.string() + ": trial " + std::to_string(row.trial) + " epoch " +
                                                std::to_string(row.epoch));
    row.decision = statement.ColumnText(4);
    rows.push_back(std::move(row));
  }
  return rows;
}

void SweepStore::PutTrial(const TrialRow& row) {
  Impl::Statement statement(*impl_,
                            "INSERT OR REPLACE INTO trials(id, params, status, attempts, worker, heartbeat, started, "
                            "finished, seconds, best, best_epoch, epochs, error, run_dir, summary) "
                            "VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
  statement.Int(1, row.id);
  statement.Text(2, row.params.dump());
  statement.Text(3, TrialStatusName(row.status));
  statement.Int(4, row.attempts);
  statement.Text(5, row.worker);
  statement.Real(6, row.heartbeat);
  statement.Real(7, row.started);
  statement.Real(8, row.finished);
  statement.Real(9, row.seconds);
  statement.OptionalReal(10, row.best);
  statement.Int(11, row.best_epoch);
  statement.Int(12, row.epochs);
  statement.Text(13, row.error);
  statement.Text(14, row.run_dir);
  statement.Text(15, row.summary.is_null() ? std::string() : row.summary.dump());
  statement.Step();
}

void SweepStore::PutEpoch(const EpochRow& row) {
  Impl::Statement statement(*impl_,
                            "INSERT OR REPLACE INTO epochs(trial, epoch, metric, record, decision) VALUES(?, ?, ?, ?, ?)");
  statement.Int(1, row.trial);
  statement.Int(2, row.epoch);
  statement.OptionalReal(3, row.metric);
  statement.Text(4, row.record.dump());
  statement.Text(5, row.decision);
  statement.Step();
}

void SweepStore::Begin() { impl_->Exec("BEGIN IMMEDIATE"); }
void SweepStore::Commit() { impl_->Exec("COMMIT"); }
void SweepStore::Rollback() { impl_->Exec("ROLLBACK"); }

void ExportJsonl(const SweepStore& store, const std::filesystem::path& file) {
  std::ostringstream out;
  for (const auto& row : store.Trials()) {
    Json line;
    line["trial"] = row.id;
    line["params"] = row.params;
    line["status"] = TrialStatusName(row.status);
    line["best"] = row.best ? Json(*row.best) : Json();
    line["best_epoch"] = row.best_epoch;
    line["epochs"] = row.epochs;
    line["attempts"] = row.attempts;
    line["seconds"] = row.seconds;
    line["run_dir"] = row.run_dir;
    if (!row.error.empty()) line["error"] = row.error;
    out << line.dump() << "\n";
  }
  data::WriteFileAtomically(file, out.str());
}

}  // namespace iisan::launcher::sweep
