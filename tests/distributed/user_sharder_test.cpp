// The sharding policy: determinism, coverage, equal steps, the single-process global batches,
// the snake deal by cost and its balance, and the evaluation split.
#include "distributed/user_sharder.h"

#include <algorithm>
#include <numeric>

#include <gtest/gtest.h>

#include "core/train/trainer.h"

namespace iisan::distributed {
namespace {

// Skewed interaction counts, as in real data: a few heavy users, many light ones.
std::vector<int64_t> SkewedInteractions(int64_t users) {
  std::vector<int64_t> counts;
  for (int64_t u = 0; u < users; ++u) counts.push_back(u % 17 == 0 ? 200 + u : 3 + (u * 13) % 11);
  return counts;
}

ShardingOptions Options(int64_t global_batch) {
  ShardingOptions options;
  options.batch_size = global_batch;
  options.seed = 99;
  return options;
}

TEST(UserSharderTest, EveryUserOnceEveryRankTheSameSteps) {
  for (int world : {1, 2, 3, 4}) {
    for (int64_t users : {1, 7, 100, 101}) {
      const UserSharder sharder(SkewedInteractions(users), world, Options(8));
      const auto plan = sharder.Plan(3);
      EXPECT_EQ(plan.steps(), (users + 7) / 8);
      std::vector<int> seen(users, 0);
      for (int r = 0; r < world; ++r) {
        const auto batches = plan.batches_of(r);
        ASSERT_EQ(static_cast<int64_t>(batches.size()), plan.steps());
        for (const auto& batch : batches) {
          EXPECT_LE(batch.size(), static_cast<size_t>((8 + world - 1) / world));
          for (int64_t u : batch) seen[u]++;
        }
      }
      EXPECT_TRUE(std::all_of(seen.begin(), seen.end(), [](int n) { return n == 1; }))
          << "world " << world << ", users " << users;
    }
  }
}

TEST(UserSharderTest, DeterministicAndReshuffledEachEpoch) {
  const UserSharder a(SkewedInteractions(64), 4, Options(16));
  const UserSharder b(SkewedInteractions(64), 4, Options(16));
  EXPECT_EQ(a.Plan(1).batches_of(2), b.Plan(1).batches_of(2));
  EXPECT_NE(a.Plan(1).batches_of(2), a.Plan(2).batches_of(2));
}

TEST(UserSharderTest, GlobalBatchesAreTheSingleProcessBatchesInTheTrainersOrder) {
  // Step s of any world covers the users of step s of one process: positions [s*B, (s+1)*B) of
  // the trainer's permutation for the epoch.
  const auto interactions = SkewedInteractions(90);
  const auto order = train::SeededPermutation(90, 99 + 5);
  for (int world : {1, 3, 4}) {
    const auto plan = UserSharder(interactions, world, Options(12)).Plan(5);
    ASSERT_EQ(plan.steps(), 8);
    for (int64_t s = 0; s < plan.steps(); ++s) {
      std::vector<int64_t> expected(order.begin() + s * 12, order.begin() + std::min<int64_t>(90, (s + 1) * 12));
      auto got = plan.global_batch(s);
      std::sort(expected.begin(), expected.end());
      std::sort(got.begin(), got.end());
      EXPECT_EQ(got, expected) << "world " << world << ", step " << s;
    }
  }
}

TEST(UserSharderTest, DealIsSnakeOrderOfCost) {
  // Costs 9, 1, 5, 7, 3, 8 dealt to 3 ranks: by cost 9 8 7 | 5 3 1 -> ranks 0 1 2 | 2 1 0.
  const std::vector<int64_t> users = {10, 11, 12, 13, 14, 15}, costs = {9, 1, 5, 7, 3, 8};
  const auto shares = DealUsers(users, costs, 3);
  ASSERT_EQ(shares.size(), 3u);
  EXPECT_EQ(shares[0], (std::vector<int64_t>{10, 11}));
  EXPECT_EQ(shares[1], (std::vector<int64_t>{15, 14}));
  EXPECT_EQ(shares[2], (std::vector<int64_t>{13, 12}));
  // Equal costs keep the batch's order (stable), and fewer users than ranks leave ranks empty.
  const auto few = DealUsers(std::vector<int64_t>{4, 2}, std::vector<int64_t>{1, 1}, 3);
  EXPECT_EQ(few[0], (std::vector<int64_t>{4}));
  EXPECT_EQ(few[1], (std::vector<int64_t>{2}));
  EXPECT_TRUE(few[2].empty());
  EXPECT_THROW(DealUsers(users, std::vector<int64_t>{1}, 3), std::invalid_argument);
  EXPECT_THROW(DealUsers(users, costs, 0), std::invalid_argument);
}

TEST(UserSharderTest, DealEvensOutInteractions) {
  const auto interactions = SkewedInteractions(400);
  const int world = 4;
  const auto plan = UserSharder(interactions, world, Options(40)).Plan(1);
  const int64_t heaviest = *std::max_element(interactions.begin(), interactions.end());
  for (int64_t s = 0; s < plan.steps(); ++s) {
    std::vector<int64_t> load(world, 0);
    for (int r = 0; r < world; ++r) {
      EXPECT_EQ(plan.batch(s, r).size(), 10u);
      for (int64_t u : plan.batch(s, r)) load[r] += interactions[u];
    }
    EXPECT_LE(*std::max_element(load.begin(), load.end()) - *std::min_element(load.begin(), load.end()), heaviest)
        << "step " << s;
  }
}

TEST(UserSharderTest, LastStepMayBeEmptyOnSomeRanks) {
  // 9 users, 4 ranks, global batch 8: step 0 takes 8 users, step 1 one user.
  const auto plan = UserSharder(std::vector<int64_t>(9, 1), 4, Options(8)).Plan(1);
  ASSERT_EQ(plan.steps(), 2);
  int empty = 0;
  for (int r = 0; r < 4; ++r) empty += plan.batch(1, r).empty();
  EXPECT_EQ(empty, 3);
}

TEST(UserSharderTest, LocalSharesWeighRowsAndSumToOne) {
  const auto plan = UserSharder(std::vector<int64_t>(10, 1), 3, Options(6)).Plan(1);
  auto rows = [](int64_t user) { return static_cast<double>(user + 1); };
  for (int64_t s = 0; s < plan.steps(); ++s) {
    double total = 0.0;
    for (int r = 0; r < 3; ++r) total += LocalShare(plan, s, r, rows);
    EXPECT_NEAR(total, 1.0, 1e-12);
  }
  double rank0_rows = 0.0, all_rows = 0.0;
  for (int64_t u : plan.batch(0, 0)) rank0_rows += u + 1;
  for (int64_t u : plan.global_batch(0)) all_rows += u + 1;
  EXPECT_DOUBLE_EQ(LocalShare(plan, 0, 0, rows), rank0_rows / all_rows);
}

TEST(UserSharderTest, EvaluationRangesCoverEveryUserOnce) {
  for (int world : {1, 2, 3, 8}) {
    for (int64_t users : {0, 1, 5, 17}) {
      int64_t next = 0;
      for (int r = 0; r < world; ++r) {
        const auto range = EvaluationRange(users, world, r);
        EXPECT_EQ(range.begin, next);
        EXPECT_LE(range.end - range.begin, users / world + 1);
        next = range.end;
      }
      EXPECT_EQ(next, users);
    }
  }
  EXPECT_THROW(EvaluationRange(10, 2, 2), std::invalid_argument);
}

}  // namespace
}  // namespace iisan::distributed
