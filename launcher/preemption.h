// Stopping a run that loses nothing when Slurm preempts it or its time limit nears. Slurm sends
// SIGUSR2 (`#SBATCH --signal=B:USR2@120` in the templates; not USR1, which NCCL may use) or
// SIGTERM; the handler only raises a flag, which the trainer reads between steps. The training
// call then finishes the step in flight and rank 0 writes a mid-epoch checkpoint; RequeueJob
// puts the Slurm job back in the queue (capped by train.max_requeues) so that the requeued job,
// whose config says train.resume=auto, continues from that step.
#pragma once

#include <atomic>
#include <map>
#include <string>

namespace iisan::launcher {

// While alive, SIGUSR2 and SIGTERM raise flag() instead of ending the process (the previous
// handlers come back on destruction). One at a time per process.
class CancelOnSignals {
 public:
  CancelOnSignals();
  ~CancelOnSignals();
  CancelOnSignals(const CancelOnSignals&) = delete;
  CancelOnSignals& operator=(const CancelOnSignals&) = delete;

  const std::atomic<bool>* flag() const;
  // The signal that raised the flag (0: none yet).
  int signal() const;
};

// What the job was told, for the log: "SIGUSR2 with 1:58 of the time limit left: the time limit
// is near (Slurm's --signal lead time)" or "... : preemption or scancel". `time_left_seconds`
// < 0 when unknown.
std::string DescribeStop(int signal, long time_left_seconds);

// The seconds left of the Slurm job's time limit, asked of squeue; -1 when unknown (no job, no
// limit, squeue missing or slow).
long SlurmTimeLeftSeconds(const std::map<std::string, std::string>& env);

struct RequeueDecision {
  bool requeue = false;
  std::string job;     // what `scontrol requeue` is given: JOBID, or ARRAYJOBID_TASKID for an array task
  std::string reason;  // for the log
};

// Whether and what to requeue: inside a Slurm job (SLURM_JOB_ID) whose requeues so far
// (SLURM_RESTART_COUNT) are fewer than `max_requeues`.
RequeueDecision DecideRequeue(const std::map<std::string, std::string>& env, int max_requeues);

// Runs `scontrol requeue JOB` (bounded by a timeout); false, with the reason logged, when it fails.
bool RequeueJob(const std::string& job);

}  // namespace iisan::launcher
