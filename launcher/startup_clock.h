// Where a run's start-up goes: the time from the process's start (or a trial's, in a sweep
// worker) to its first training step, in named phases (shared libraries, config, dataset, cache
// key, model, device init on CUDA, cache check, cache load, device transfer, run directory,
// trainer, first step). Each phase is logged as it ends ("start-up: dataset 0.41 s"), the total
// once the first step has run ("start-up: 1.52 s to the first step"), and both go into the run's
// summary.json.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace iisan::launcher {

class StartupClock {
 public:
  using Clock = std::chrono::steady_clock;

  // Measures from `start`.
  explicit StartupClock(Clock::time_point start = Clock::now());

  // When this process started (its start time in /proc/self/stat, 10 ms resolution), so that
  // the loading of shared libraries and static initialisation before main() count too; now()
  // where that cannot be read.
  static Clock::time_point ProcessStart();

  // Ends the phase that began at the previous mark (or at the start) and logs its seconds.
  void Mark(const std::string& phase);
  // Marks "first step" and logs the total; only the first call does anything.
  void FirstStep();

  Clock::time_point start() const { return start_; }
  // Seconds from the start to the end of the first step; empty until FirstStep().
  std::optional<double> seconds_to_first_step() const { return to_first_step_; }
  // The phases in the order they ended, with their seconds (they add up to the total).
  const std::vector<std::pair<std::string, double>>& phases() const { return phases_; }

 private:
  Clock::time_point start_;
  Clock::time_point last_;
  std::vector<std::pair<std::string, double>> phases_;
  std::optional<double> to_first_step_;
};

}  // namespace iisan::launcher
