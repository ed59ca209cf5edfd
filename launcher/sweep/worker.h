// A sweep worker: pulls trials from the scheduler and trains each in this process through the
// run-as-a-library call (RunTraining), reporting every epoch's metrics and obeying the answer
// (continue, stop, wait), with a heartbeat beside the training. The loaded cache, the dataset
// files and the CUDA context stay between trials. A worker whose trial was handed to another
// worker (its lease expired) drops it without writing anything more.
#pragma once

#include <atomic>
#include <chrono>
#include <string>

namespace iisan::launcher::sweep {

struct WorkerOptions {
  std::string endpoint;  // "unix:PATH" or "HOST:PORT"
  std::string token;
  std::string name;      // in the scheduler's log; default host:pid
  // How long to keep trying to reach a scheduler that does not answer (restarting, say).
  std::chrono::seconds reconnect{120};
  // Raised (SIGTERM, SIGUSR2): the trial in flight checkpoints and goes back to the scheduler.
  const std::atomic<bool>* stop = nullptr;
  // A separate process exits at once when it loses its trial (nothing else of it can write
  // into the trial's directory); in-process workers (tests) return instead.
  bool exit_on_abandon = true;
};

// Runs trials until the scheduler says the sweep is done (or `stop` is raised). Returns the
// number of trials this worker ran.
int RunWorker(const WorkerOptions& options);

}  // namespace iisan::launcher::sweep
