#include "launcher/sweep/early_stopping.h"

#include <algorithm>
#include <cmath>

namespace iisan::launcher::sweep {
namespace {

// Best score (larger is better) among epochs <= epoch.
std::optional<double> BestSoFar(const TrialProgress& progress, int epoch, bool maximize) {
  std::optional<double> best;
  for (const auto& [e, value] : progress.metric) {
    if (e > epoch) break;
    const double score = maximize ? value : -value;
    if (!best || score > *best) best = score;
  }
  return best;
}

std::optional<double> RunningMean(const TrialProgress& progress, int epoch, bool maximize) {
  double sum = 0;
  int count = 0;
  for (const auto& [e, value] : progress.metric) {
    if (e > epoch) break;
    sum += maximize ? value : -value;
    ++count;
  }
  if (count == 0) return std::nullopt;
  return sum / count;
}

// Linear interpolation between order statistics (numpy's default).
double Quantile(std::vector<double> values, double q) {
  std::sort(values.begin(), values.end());
  const double position = q * static_cast<double>(values.size() - 1);
  const auto lower = static_cast<size_t>(std::floor(position));
  const auto upper = std::min(lower + 1, values.size() - 1);
  const double fraction = position - static_cast<double>(lower);
  return values[lower] + fraction * (values[upper] - values[lower]);
}

// Every earlier trial has reported `epoch` or ended: nothing later can change the comparison.
bool Settled(const std::map<int, TrialProgress>& trials, int trial, int epoch) {
  for (const auto& [index, progress] : trials) {
    if (index >= trial) break;
    if (progress.last_epoch >= epoch || progress.ended) continue;
    return false;
  }
  // Trials not created yet have larger indices than any created one: dispatch is in order.
  return true;
}

}  // namespace

const char* DecisionName(Decision decision) {
  switch (decision) {
    case Decision::kContinue: return "continue";
    case Decision::kStop: return "stop";
    case Decision::kWait: return "wait";
  }
  return "?";
}

std::vector<int> AshaRungs(const EarlyStopping& rule, int max_epochs) {
  std::vector<int> rungs;
  for (int64_t rung = rule.grace_period; rung < max_epochs; rung *= rule.reduction_factor) {
    rungs.push_back(static_cast<int>(rung));
  }
  return rungs;
}

Decision Decide(const SweepSpec& spec, int max_epochs, int trial, int epoch,
                const std::map<int, TrialProgress>& trials) {
  const auto& rule = spec.early_stopping;
  if (rule.rule == StoppingRule::kNone || epoch >= max_epochs) return Decision::kContinue;
  const auto self = trials.find(trial);
  if (self == trials.end()) return Decision::kContinue;
  const auto own = BestSoFar(self->second, epoch, spec.maximize);
  if (rule.rule == StoppingRule::kAsha) {
    const auto rungs = AshaRungs(rule, max_epochs);
    if (std::find(rungs.begin(), rungs.end(), epoch) == rungs.end()) return Decision::kContinue;
  } else if (epoch < rule.grace_period) {
    return Decision::kContinue;
  }
  if (!Settled(trials, trial, epoch)) return Decision::kWait;
  // A trial that reported nothing finite by now (a NaN metric is never stored) cannot compete.
  if (!own) return Decision::kStop;
  std::vector<double> others;
  for (const auto& [index, progress] : trials) {
    if (index >= trial) break;
    if (!progress.metric.count(epoch)) continue;
    const auto value = rule.rule == StoppingRule::kAsha ? BestSoFar(progress, epoch, spec.maximize)
                                                        : RunningMean(progress, epoch, spec.maximize);
    if (value) others.push_back(*value);
  }
  if (rule.rule == StoppingRule::kAsha) {
    if (others.empty()) return Decision::kContinue;
    const double cutoff = Quantile(others, 1.0 - 1.0 / rule.reduction_factor);
    return *own < cutoff ? Decision::kStop : Decision::kContinue;
  }
  if (static_cast<int>(others.size()) < rule.min_trials) return Decision::kContinue;
  return *own < Quantile(others, 0.5) ? Decision::kStop : Decision::kContinue;
}

}  // namespace iisan::launcher::sweep
