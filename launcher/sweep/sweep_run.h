// `iisan sweep run|worker|status`: the scheduler with an executor, and the worker process.
// Executors:
//   local      worker processes on this host: --trials-per-gpu K per visible GPU (CUDA_VISIBLE_DEVICES
//              set per worker; with K > 1 the CUDA MPS daemon is started for the sweep when
//              available, --mps), or `concurrency` CPU workers; a worker that dies is restarted
//   slurm      a job array of workers (slurm/sweep.sbatch), one worker per array task, at most
//              `concurrency` at a time (%N); cancelled when the sweep is done
//   inprocess  one worker thread in this process (tests; trials run one at a time)
#pragma once

#include <filesystem>
#include <ostream>
#include <string>
#include <vector>

#include "launcher/sweep/sweep_spec.h"

namespace iisan::launcher::sweep {

struct SweepRunOptions {
  std::filesystem::path spec_file;
  std::filesystem::path dir;  // default: <base run_root>/sweeps/<name>
  std::filesystem::path db;   // default: dir/sweep.db (must be on a local disk)
  std::string executor = "local";
  int trials_per_gpu = 1;
  std::string mps = "auto";   // auto | on | off
  std::string listen;         // TCP for the scheduler (needed by workers on other hosts)
  std::filesystem::path slurm_template;  // default: the source tree's slurm/sweep.sbatch
  std::vector<std::string> sbatch_args;
  double progress_every_s = 10;
};

// Runs (or resumes) the sweep to the end; returns the exit code (0: every trial ended; 1: the
// executor lost all its workers with trials left, rerun to resume).
int SweepRun(const SweepRunOptions& options, std::ostream& out);

struct SweepWorkerOptions {
  std::filesystem::path dir;
  std::string name;
  int reconnect_s = 120;
};
int SweepWorker(const SweepWorkerOptions& options);

// One progress line of a running sweep (asks its scheduler).
void SweepStatus(const std::filesystem::path& dir, std::ostream& out);

}  // namespace iisan::launcher::sweep
