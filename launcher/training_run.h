// Training as a library call: what `iisan train`, the tests and a sweep worker run in-process.
// RunTraining takes a prepared Job (job.h) and callbacks, joins the data-parallel world when
// the process is one rank of one (mpirun, srun, `iisan launch`), builds or loads the cache,
// trains into the run directory runs/<name>/ (config.json, metrics.jsonl, checkpoints/, log/,
// summary.json, profile/ with train.profile_steps) and returns how the run ended with its
// summary as a typed value.
#pragma once

#include <atomic>
#include <filesystem>
#include <functional>

#include "core/train/run_summary.h"
#include "core/train/trainer.h"
#include "launcher/job.h"

namespace iisan::launcher {

struct TrainingCallbacks {
  // After each epoch (metrics line and checkpoints written): kStop ends the run there, with a
  // summary and status kStopped.
  std::function<train::EpochDecision(const train::EpochRecord&)> on_epoch;
  // Raised to stop between steps: the step in flight finishes, rank 0 writes a resumable
  // checkpoint of that step (checkpoints/last), and the call returns kCancelled without a
  // summary.json; train.resume continues the run from that step.
  const std::atomic<bool>* cancel = nullptr;
};

struct TrainingOutcome {
  train::RunStatus status = train::RunStatus::kCompleted;
  train::RunSummary summary;  // rank 0; written as summary.json unless the run was cancelled
  std::filesystem::path run_dir;
  bool lead = true;  // this process is rank 0 (the one that writes the run directory)
};

// Throws (naming the key, file or rank at fault) when the job cannot run; a diverged run throws
// after keeping the checkpoints of its finished epochs. `startup` is the clock that PrepareJob
// marked (null: the start-up is measured from this call); the phases up to the first step go
// into the log and the summary.
TrainingOutcome RunTraining(Job job, const TrainingCallbacks& callbacks = {}, StartupClock* startup = nullptr);

}  // namespace iisan::launcher
