// Early stopping for sweeps: ASHA and the median rule, as pure functions of the reported
// metrics. Asynchronous rules are usually order-dependent (a trial is judged against whichever
// trials happened to report first); here trial t at epoch e is judged against the trials with a
// smaller index only, and the decision waits until each of those has either reported epoch e or
// ended before it. So a sweep's decisions, and therefore its results, are the same whether its
// trials run one at a time or concurrently. Trials are dispatched in index order, so the lowest
// running trial never waits.
#pragma once

#include <map>
#include <optional>
#include <vector>

#include "launcher/sweep/sweep_spec.h"

namespace iisan::launcher::sweep {

enum class Decision { kContinue, kStop, kWait };
const char* DecisionName(Decision decision);

// What the rules see of one trial.
struct TrialProgress {
  std::map<int, double> metric;  // epoch -> reported metric (finite; non-finite are not stored)
  int last_epoch = 0;            // the last epoch reported, finite or not
  bool ended = false;            // will report no more epochs (finished, stopped or failed)
};

// ASHA's rungs: grace * rf^k for k = 0, 1, ... while below max_epochs.
std::vector<int> AshaRungs(const EarlyStopping& rule, int max_epochs);

// The decision after trial `trial` reported `epoch`. `trials` holds every trial created so far
// (index -> progress, including `trial` itself with its metric at `epoch`).
// ASHA: at a rung, the trial's best metric so far must reach the (1 - 1/rf) quantile of the
// earlier trials' best-so-far at that rung (no earlier trial there: continue).
// Median: from grace_period on, once at least min_trials earlier trials reached the epoch, the
// trial's best so far must reach the median of their running means up to that epoch.
Decision Decide(const SweepSpec& spec, int max_epochs, int trial, int epoch,
                const std::map<int, TrialProgress>& trials);

}  // namespace iisan::launcher::sweep
