// Full-ranking evaluation of a model (IISAN.md §3.6) on the validation or test split, and the
// popularity baseline ranked the same way. Data-parallel: each rank ranks one contiguous range
// of users and the metric sums are reduced, so that no user is counted twice.
#pragma once

#include <cstdint>
#include <vector>

#include "core/data/dataset.h"
#include "core/train/data_parallel.h"
#include "core/train/ranking.h"
#include "core/train/recommender.h"

namespace iisan::train {

enum class Split { kValid, kTest };

struct EvalOptions {
  int64_t batch_size = 256;  // users per scoring matmul (and items per item-table chunk)
  std::vector<int> ks = {5, 10, 20};
  // False (the reference): every history item is excluded from the ranking, so a target that
  // repeats one always misses (IISAN.md §9.9). True: the target itself is never excluded.
  bool count_repeated_targets = false;
};

// Ranks every user's split target against all items with `model` (eval mode, no autograd).
// With `parallel`, the ranks split the users and every rank returns the reduced metrics.
RankingMetrics EvaluateModel(Recommender& model, const data::Dataset& dataset, Split split, const EvalOptions& options,
                             DataParallel* parallel = nullptr);

// The popularity baseline: every user gets items ranked by train-split popularity, with the
// same history exclusion and tie-breaking as the model (options.batch_size is not used).
RankingMetrics EvaluatePopularity(const data::Dataset& dataset, Split split, const EvalOptions& options);

}  // namespace iisan::train
