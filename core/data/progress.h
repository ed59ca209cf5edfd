// ProgressMeter: a throttled "what: done/total unit (pct), rate, ETA" log line for long loops
// (cache builds, evaluation, dataset generation), written through glog.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>

namespace iisan::data {

class ProgressMeter {
 public:
  static constexpr std::chrono::milliseconds kDefaultInterval{2000};

  // total <= 0 means unknown: lines then show the count and rate without percentage or ETA.
  ProgressMeter(std::string what, int64_t total, std::string unit = "items",
                std::chrono::milliseconds interval = kDefaultInterval);

  // Counts n more units done; logs when interval has passed since the last line. Thread-safe.
  void Advance(int64_t n = 1);
  // Logs the final line (once; later calls do nothing).
  void Finish();

 private:
  using Clock = std::chrono::steady_clock;

  const std::string what_;
  const int64_t total_;
  const std::string unit_;
  const std::chrono::milliseconds interval_;
  const Clock::time_point start_;
  std::mutex mutex_;
  Clock::time_point last_log_;
  int64_t done_ = 0;
  bool finished_ = false;
};

// The line ProgressMeter logs, e.g. "cache build: 5120/20314 items (25.2%), 1830 items/s, ETA 8s"
// or, when finished, "cache build: 20314/20314 items (100.0%), 1830 items/s, done in 11s".
std::string FormatProgress(std::string_view what, int64_t done, int64_t total,
                           std::string_view unit, double elapsed_seconds, bool finished);

}  // namespace iisan::data
