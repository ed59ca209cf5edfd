// Searchers turn a sweep's space into trial parameters ({"dotted.key": value}). They sit behind
// one interface so that a model-based searcher (TPE) can follow: Suggest sees the finished
// trials. Grid and seeded random depend only on the spec and the trial index, so trial i has the
// same parameters however many trials run at once and in whatever order they finish.
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "launcher/sweep/sweep_spec.h"

namespace iisan::launcher::sweep {

struct Observation {
  int trial = 0;
  Json params;
  std::optional<double> metric;  // best reported, when finite
};

class Searcher {
 public:
  virtual ~Searcher() = default;
  // The parameters of trial `index` (0, 1, ...) or nullopt when the budget or space is spent.
  virtual std::optional<Json> Suggest(int index, const std::vector<Observation>& finished) = 0;
  // How many trials the sweep runs.
  virtual int Budget() const = 0;
};

// "grid": every combination of the grid and choice values in order (a key whose `when` does not
// hold is left out; duplicates removed), at most spec.trials when that is set.
// "random": grid dimensions cycle through their combinations (trial i takes combination i mod
// their count), every other dimension is drawn from a generator seeded by (seed, trial, key).
std::unique_ptr<Searcher> MakeSearcher(const SweepSpec& spec);

}  // namespace iisan::launcher::sweep
