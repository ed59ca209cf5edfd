// The process's start from /proc/self/stat, and the phase log.
#include "launcher/startup_clock.h"

#include <time.h>
#include <unistd.h>

#include <fstream>
#include <iomanip>
#include <sstream>

#include <glog/logging.h>

namespace iisan::launcher {
namespace {

double SecondsBetween(StartupClock::Clock::time_point from, StartupClock::Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

std::string Seconds(double seconds) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(3) << seconds << " s";
  return out.str();
}

}  // namespace

StartupClock::StartupClock(Clock::time_point start) : start_(start), last_(start) {}

StartupClock::Clock::time_point StartupClock::ProcessStart() {
  const auto now = Clock::now();
  // Field 22, starttime, in clock ticks since boot; field 2 (the command name, in parentheses)
  // may hold spaces, so the fields are counted from the last ')'.
  std::ifstream in("/proc/self/stat");
  std::string stat;
  if (!std::getline(in, stat)) return now;
  const auto name_end = stat.rfind(')');
  if (name_end == std::string::npos) return now;
  std::istringstream fields(stat.substr(name_end + 1));
  std::string field;
  for (int index = 3; index <= 22; ++index) {
    if (!(fields >> field)) return now;
  }
  const long ticks_per_second = ::sysconf(_SC_CLK_TCK);
  timespec boot{};
  if (ticks_per_second <= 0 || ::clock_gettime(CLOCK_BOOTTIME, &boot) != 0 ||
      field.find_first_not_of("0123456789") != std::string::npos || field.empty() || field.size() > 18) {
    return now;
  }
  const double started = static_cast<double>(std::stoull(field)) / static_cast<double>(ticks_per_second);
  const double age = static_cast<double>(boot.tv_sec) + 1e-9 * static_cast<double>(boot.tv_nsec) - started;
  // Anything but a few seconds is not a start this clock can use (another clock base).
  if (!(age >= 0.0 && age < 600.0)) return now;
  return now - std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(age));
}

void StartupClock::Mark(const std::string& phase) {
  const auto now = Clock::now();
  const double seconds = SecondsBetween(last_, now);
  last_ = now;
  phases_.emplace_back(phase, seconds);
  LOG(INFO) << "start-up: " << phase << " " << Seconds(seconds) << " (" << Seconds(SecondsBetween(start_, now))
            << " since the start)";
}

void StartupClock::FirstStep() {
  if (to_first_step_) return;
  Mark("first step");
  to_first_step_ = SecondsBetween(start_, last_);
  std::ostringstream phases;
  for (size_t i = 0; i < phases_.size(); ++i) {
    phases << (i ? ", " : "") << phases_[i].first << " " << std::fixed << std::setprecision(2) << phases_[i].second;
  }
  LOG(INFO) << "start-up: " << Seconds(*to_first_step_) << " to the first step (" << phases.str() << ")";
}

}  // namespace iisan::launcher
