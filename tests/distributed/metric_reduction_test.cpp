// Distributed evaluation: sums reduced, every user counted once.
#include "distributed/metric_reduction.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "distributed/user_sharder.h"
#include "tests/distributed/run_ranks.h"

namespace iisan::distributed {
namespace {

using testing::RunRanks;

// Rank of user u's target: a fixed function of u, so one process can compute the truth.
torch::Tensor RanksOf(UserRange range) { return torch::arange(range.begin, range.end, torch::kInt64) % 23 + 1; }

TEST(MetricReductionTest, ShardedMetricsEqualOneProcesssMetrics) {
  const int64_t users = 101;
  train::RankingMetrics expected({5, 10});
  train::AccumulateRanks(RanksOf({0, users}), expected);
  std::vector<train::RankingMetrics> reduced(4);
  RunRanks(4, [&](Communicator& comm) {
    train::RankingMetrics local({5, 10});
    train::AccumulateRanks(RanksOf(EvaluationRange(users, comm.world_size(), comm.rank())), local);
    reduced[comm.rank()] = ReduceRankingMetrics(comm, local, users);
  });
  for (const auto& metrics : reduced) {
    EXPECT_EQ(metrics.users, users);
    EXPECT_EQ(metrics.hit_sum, expected.hit_sum);
    for (size_t k = 0; k < 2; ++k) EXPECT_NEAR(metrics.ndcg_sum[k], expected.ndcg_sum[k], 1e-9);
  }
}

TEST(MetricReductionTest, AUserCountedTwiceIsAnErrorOnEveryRank) {
  int errors = 0;
  std::mutex mutex;
  RunRanks(2, [&](Communicator& comm) {
    train::RankingMetrics local({10});
    train::AccumulateRanks(RanksOf({0, 6}), local);  // both ranks evaluate users 0..5
    try {
      ReduceRankingMetrics(comm, local, 6);
    } catch (const EvaluationCoverageError&) {
      std::lock_guard lock(mutex);
      ++errors;
    }
  });
  EXPECT_EQ(errors, 2);
}

TEST(MetricReductionTest, AllReduceSumOfDoubles) {
  RunRanks(3, [](Communicator& comm) {
    const std::vector<double> mine = {1.0, 0.25 * comm.rank(), 1e15};
    EXPECT_EQ(AllReduceSum(comm, mine), (std::vector<double>{3.0, 0.75, 3e15}));
  });
}

}  // namespace
}  // namespace iisan::distributed
