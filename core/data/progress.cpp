// ProgressMeter implementation. The rate is the average since construction, which is steadier
// than a windowed rate for loops whose steps vary in cost (first-batch warm-up, I/O stalls).
#include "core/data/progress.h"

#include <glog/logging.h>

#include <cmath>
#include <cstdio>

namespace iisan::data {
namespace {

std::string FormatDuration(double seconds) {
  const auto total = static_cast<int64_t>(std::llround(std::max(seconds, 0.0)));
  char text[32];
  if (total < 60) {
    std::snprintf(text, sizeof(text), "%llds", static_cast<long long>(total));
  } else if (total < 3600) {
    std::snprintf(text, sizeof(text), "%lldm%02llds", static_cast<long long>(total / 60),
                  static_cast<long long>(total % 60));
  } else {
    std::snprintf(text, sizeof(text), "%lldh%02lldm", static_cast<long long>(total / 3600),
                  static_cast<long long>(total % 3600 / 60));
  }
  return text;
}

}  // namespace

std::string FormatProgress(std::string_view what, int64_t done, int64_t total,
                           std::string_view unit, double elapsed_seconds, bool finished) {
  const double rate = elapsed_seconds > 0 ? static_cast<double>(done) / elapsed_seconds : 0.0;
  char numbers[96];
  if (total > 0) {
    std::snprintf(numbers, sizeof(numbers), "%lld/%lld", static_cast<long long>(done),
                  static_cast<long long>(total));
  } else {
    std::snprintf(numbers, sizeof(numbers), "%lld", static_cast<long long>(done));
  }
  std::string line = std::string(what) + ": " + numbers + " " + std::string(unit);
  if (total > 0) {
    char percent[32];
    std::snprintf(percent, sizeof(percent), " (%.1f%%)",
                  100.0 * static_cast<double>(done) / static_cast<double>(total));
    line += percent;
  }
  char speed[48];
  std::snprintf(speed, sizeof(speed), rate < 10 ? ", %.1f " : ", %.0f ", rate);
  line += speed + std::string(unit) + "/s";
  if (finished) {
    line += ", done in " + FormatDuration(elapsed_seconds);
  } else if (total > 0 && rate > 0) {
    line +=
        ", ETA " + FormatDuration(static_cast<double>(std::max<int64_t>(total - done, 0)) / rate);
  }
  return line;
}

ProgressMeter::ProgressMeter(std::string what, int64_t total, std::string unit,
                             std::chrono::milliseconds interval)
    : what_(std::move(what)),
      total_(total),
      unit_(std::move(unit)),
      interval_(interval),
      start_(Clock::now()),
      last_log_(start_) {}

void ProgressMeter::Advance(int64_t n) {
  std::lock_guard<std::mutex> lock(mutex_);
  done_ += n;
  const auto now = Clock::now();
  if (finished_ || now - last_log_ < interval_) return;
  last_log_ = now;
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  LOG(INFO) << FormatProgress(what_, done_, total_, unit_, elapsed, /*finished=*/false);
}

void ProgressMeter::Finish() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (finished_) return;
  finished_ = true;
  const double elapsed = std::chrono::duration<double>(Clock::now() - start_).count();
  LOG(INFO) << FormatProgress(what_, done_, total_, unit_, elapsed, /*finished=*/true);
}

}  // namespace iisan::data
