// A sweep's durable state: SQLite in WAL mode at SWEEP_DIR/sweep.db, written through before
// the scheduler answers a worker, so a scheduler killed at any moment restarts with every trial,
// every reported epoch and every decision it gave. The database must sit on a local disk: SQLite's
// WAL needs shared memory (the -shm file, mmap) and POSIX locks that NFS does not provide
// reliably, so two hosts or a flaky lock can corrupt it. On a cluster whose sweep directory is on
// NFS, put the database on the scheduler host's local disk (`iisan sweep run --db PATH`); the
// trials' run directories may stay on NFS (only the scheduler opens the database).
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace iisan::launcher::sweep {

using Json = nlohmann::ordered_json;

enum class TrialStatus { kPending, kRunning, kCompleted, kEarlyStopped, kPruned, kFailed };
const char* TrialStatusName(TrialStatus status);
TrialStatus ParseTrialStatus(const std::string& name);  // std::runtime_error otherwise
bool IsTerminal(TrialStatus status);

struct TrialRow {
  int id = 0;
  Json params = Json::object();
  TrialStatus status = TrialStatus::kPending;
  int attempts = 0;            // dispatches so far (the current attempt is this number)
  std::string worker;          // the worker running or that ran the last attempt
  double heartbeat = 0;        // seconds since the epoch, last heartbeat of the running attempt
  double started = 0, finished = 0;
  double seconds = 0;          // running time summed over attempts
  std::optional<double> best;  // best reported metric
  int best_epoch = 0;
  int epochs = 0;              // epochs reported
  std::string error;
  std::string run_dir;
  Json summary;                // the run's summary.json (finished trials), or null
};

struct EpochRow {
  int trial = 0, epoch = 0;
  std::optional<double> metric;
  Json record;
  std::string decision;
};

class SweepStore {
 public:
  // Opens (creating when absent) the database. std::runtime_error naming the file otherwise.
  explicit SweepStore(const std::filesystem::path& file, bool read_only = false);
  ~SweepStore();
  SweepStore(const SweepStore&) = delete;
  SweepStore& operator=(const SweepStore&) = delete;

  std::optional<std::string> Meta(const std::string& key) const;
  // When the sweep first started (meta "started", seconds since the epoch), or `fallback` when it
  // has not; std::runtime_error naming the file when the stored value is not a finite number.
  double Started(double fallback) const;
  void SetMeta(const std::string& key, const std::string& value);

  std::vector<TrialRow> Trials() const;
  std::vector<EpochRow> Epochs() const;
  // Inserts or replaces the trial (every field).
  void PutTrial(const TrialRow& row);
  // Inserts or replaces one epoch (a retried attempt reports the same epochs again).
  void PutEpoch(const EpochRow& row);
  // PutTrial and PutEpoch calls between Begin and Commit land together or not at all.
  void Begin();
  void Commit();
  void Rollback();

  const std::filesystem::path& file() const { return file_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::filesystem::path file_;
};

// trials.jsonl: one line per trial (id, params, status, best, epochs, seconds, run_dir, error),
// written atomically; what scripts read without SQLite.
void ExportJsonl(const SweepStore& store, const std::filesystem::path& file);

}  // namespace iisan::launcher::sweep
