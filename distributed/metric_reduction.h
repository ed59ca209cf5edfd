// Distributed evaluation: each rank ranks its own users (EvaluationRange in user_sharder.h)
// against all items, and the metric sums and user counts are summed across ranks, so that the
// means are those of one process that saw every user once.
#pragma once

#include <cstdint>
#include <span>
#include <stdexcept>
#include <vector>

#include "core/train/ranking.h"
#include "distributed/communicator.h"

namespace iisan::distributed {

// Element-wise sum over ranks, in float64 (exact for counts below 2^53).
std::vector<double> AllReduceSum(Communicator& comm, std::span<const double> values);

class EvaluationCoverageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Sums hit and NDCG sums and user counts over ranks. Throws EvaluationCoverageError (on every
// rank alike) unless the ranks evaluated `expected_users` users in total: a user counted twice
// or missed would otherwise bias the means silently.
train::RankingMetrics ReduceRankingMetrics(Communicator& comm, const train::RankingMetrics& local,
                                           int64_t expected_users);

}  // namespace iisan::distributed
