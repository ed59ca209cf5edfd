// The sweep scheduler: trials handed to workers in index order, their epochs judged by the
// early-stopping rule, their state in the sweep database (sweep_store.h), written before any
// reply. The protocol (one JSON object per line, line_rpc.h); every request may carry "token"
// (required when the scheduler has one):
//   {"op":"pull","worker":W}                      -> {"ok":true,"trial":{"id","attempt","config","run_dir"}}
//                                                    | {"ok":true,"wait":S} | {"ok":true,"done":true}
//   {"op":"heartbeat","trial":T,"attempt":A}      -> {"ok":true} | {"ok":true,"abandon":true}
//   {"op":"epoch","trial":T,"attempt":A,"record":{EpochRecord}}
//                                                 -> {"ok":true,"decision":"continue"|"stop"|"wait"}
//                                                    | {"ok":true,"abandon":true}
//   {"op":"finish","trial":T,"attempt":A,"status":S,"summary":{..},"error":E,"caches":{..}}
//                                                 -> {"ok":true}
//   {"op":"status"}                               -> counts, best, ETA
// A message from an attempt that is no longer the trial's current one (its lease expired and
// the trial was handed out again) gets "abandon": the worker must drop the trial unwritten.
// A malformed message gets {"ok":false,"error":...} and changes nothing.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "launcher/sweep/early_stopping.h"
#include "launcher/sweep/searcher.h"
#include "launcher/sweep/sweep_spec.h"
#include "launcher/sweep/sweep_store.h"

namespace iisan::launcher::sweep {

double NowSeconds();

struct SweepProgress {
  int total = 0, created = 0, pending = 0, running = 0;
  int completed = 0, early_stopped = 0, pruned = 0, failed = 0;
  std::optional<double> best;
  int best_trial = -1;
  double elapsed_seconds = 0;
  std::optional<double> eta_seconds;
  int caches_built = 0, caches_loaded = 0, caches_reused = 0;
  int retries = 0;
  std::string Line(const std::string& metric) const;
  Json ToJson() const;
};

// The scheduler's logic without the network: tests and the in-process executor call Handle.
// Thread-safe (one mutex).
class SweepState {
 public:
  // Opens or creates SWEEP_DIR/sweep.db (or `db_file`). A sweep directory that holds another
  // spec is an error naming the first difference.
  SweepState(SweepSpec spec, std::filesystem::path sweep_dir, std::filesystem::path db_file = {});

  Json Handle(const Json& request, double now);
  // Returns running trials whose heartbeat is older than the timeout to pending (or failed after
  // max_attempts); call periodically.
  void ExpireLeases(double now);
  bool Done() const;
  SweepProgress Progress(double now) const;
  const SweepSpec& spec() const { return spec_; }
  const std::filesystem::path& dir() const { return dir_; }
  void Export() const;  // trials.jsonl
  int max_epochs() const { return max_epochs_; }

 private:
  void ExpireLocked(double now);
  SweepProgress ProgressLocked(double now) const;
  Json Pull(const Json& request, double now);
  Json Heartbeat(const Json& request, double now);
  Json Epoch(const Json& request, double now);
  Json Finish(const Json& request, double now);
  TrialRow* Current(const Json& request, Json& reply);
  void Save(const TrialRow& row);

  SweepSpec spec_;
  std::filesystem::path dir_;
  std::unique_ptr<SweepStore> store_;
  std::unique_ptr<Searcher> searcher_;
  int max_epochs_ = 0;
  mutable std::mutex mutex_;
  std::map<int, TrialRow> trials_;
  std::map<int, TrialProgress> progress_;
  std::map<std::pair<int, int>, std::string> decisions_;  // (trial, epoch) -> continue | stop
  std::map<int, double> attempt_started_;
  double started_ = 0;
  int caches_built_ = 0, caches_loaded_ = 0, caches_reused_ = 0, retries_ = 0;
};

// The scheduler's socket: SWEEP_DIR/scheduler.sock by default, or TCP with a token. Writes
// SWEEP_DIR/scheduler.json ({"endpoint": ..., "token_file": ...}) for workers to find it.
struct SchedulerOptions {
  std::string listen;   // "HOST:PORT"; empty: the Unix socket
  std::string token;    // required over TCP; written to SWEEP_DIR/token (0600)
};

class SchedulerServer {
 public:
  SchedulerServer(SweepState& state, const SchedulerOptions& options);
  ~SchedulerServer();
  std::string endpoint() const;
  void Run();
  void Stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Reads SWEEP_DIR/scheduler.json: the endpoint and the token (empty for a Unix socket).
std::pair<std::string, std::string> FindScheduler(const std::filesystem::path& sweep_dir);

}  // namespace iisan::launcher::sweep
