// User sharding: determinism, coverage, equal steps, balance by interactions, the single-process
// order of kExactGlobalOrder, and the evaluation split.
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

ShardingOptions Options(ShardingMode mode, int64_t batch) {
  ShardingOptions options;
  options.mode = mode;
  options.batch_size = batch;
  options.seed = 99;
  return options;
}

class UserSharderModesTest : public ::testing::TestWithParam<ShardingMode> {};

TEST_P(UserSharderModesTest, EveryUserOnceEveryRankTheSameSteps) {
  for (int world : {1, 2, 3, 4}) {
    for (int64_t users : {1, 7, 100, 101}) {
      const UserSharder sharder(SkewedInteractions(users), world, Options(GetParam(), 8));
      const auto plan = sharder.Plan(3);
      EXPECT_EQ(plan.steps(), (users + 8 * world - 1) / (8 * world));
      std::vector<int> seen(users, 0);
      for (int r = 0; r < world; ++r) {
        const auto batches = plan.batches_of(r);
        ASSERT_EQ(static_cast<int64_t>(batches.size()), plan.steps());
        for (const auto& batch : batches) {
          EXPECT_LE(batch.size(), 8u);
          for (int64_t u : batch) seen[u]++;
        }
      }
      EXPECT_TRUE(std::all_of(seen.begin(), seen.end(), [](int n) { return n == 1; }))
          << "world " << world << ", users " << users;
    }
  }
}

TEST_P(UserSharderModesTest, DeterministicAndReshuffledEachEpoch) {
  const UserSharder a(SkewedInteractions(64), 4, Options(GetParam(), 4));
  const UserSharder b(SkewedInteractions(64), 4, Options(GetParam(), 4));
  EXPECT_EQ(a.Plan(1).batches_of(2), b.Plan(1).batches_of(2));
  EXPECT_NE(a.Plan(1).batches_of(2), a.Plan(2).batches_of(2));
}

TEST_P(UserSharderModesTest, GlobalBatchesAreTheSingleProcessBatches) {
  // Step s of W ranks with batch B covers the users of step s of one process with batch B*W.
  const auto interactions = SkewedInteractions(90);
  const UserSharder one(interactions, 1, Options(ShardingMode::kExactGlobalOrder, 12));
  const UserSharder four(interactions, 4, Options(GetParam(), 3));
  const auto single = one.Plan(5), sharded = four.Plan(5);
  ASSERT_EQ(single.steps(), sharded.steps());
  for (int64_t s = 0; s < single.steps(); ++s) {
    auto expected = single.global_batch(s), got = sharded.global_batch(s);
    if (GetParam() == ShardingMode::kBalanced) {
      std::sort(expected.begin(), expected.end());
      std::sort(got.begin(), got.end());
    }
    EXPECT_EQ(got, expected) << "step " << s;
  }
}

INSTANTIATE_TEST_SUITE_P(Modes, UserSharderModesTest,
                         ::testing::Values(ShardingMode::kBalanced, ShardingMode::kExactGlobalOrder),
                         [](const ::testing::TestParamInfo<ShardingMode>& info) {
                           return info.param == ShardingMode::kBalanced ? "Balanced" : "ExactGlobalOrder";
                         });

TEST(UserSharderTest, ExactOrderFollowsTheTrainersPermutation) {
  const UserSharder sharder(std::vector<int64_t>(10, 1), 2, Options(ShardingMode::kExactGlobalOrder, 2));
  const auto order = train::SeededPermutation(10, 99 + 4);
  const auto plan = sharder.Plan(4);
  // Step 1 covers positions 4..7: rank 0 takes 4, 5 and rank 1 takes 6, 7.
  EXPECT_EQ(std::vector<int64_t>(plan.batch(1, 0).begin(), plan.batch(1, 0).end()),
            (std::vector<int64_t>{order[4], order[5]}));
  EXPECT_EQ(std::vector<int64_t>(plan.batch(1, 1).begin(), plan.batch(1, 1).end()),
            (std::vector<int64_t>{order[6], order[7]}));
  // The last step has 2 users for 2 ranks of batch 2: one each.
  EXPECT_EQ(plan.batch(2, 0).size(), 1u);
  EXPECT_EQ(plan.batch(2, 1).size(), 1u);
}

TEST(UserSharderTest, BalancedModeEvensOutInteractions) {
  const auto interactions = SkewedInteractions(400);
  const int world = 4;
  auto spread = [&](ShardingMode mode) {
    const auto plan = UserSharder(interactions, world, Options(mode, 10)).Plan(1);
    std::vector<int64_t> load(world, 0);
    for (int r = 0; r < world; ++r) {
      for (const auto& batch : plan.batches_of(r)) {
        for (int64_t u : batch) load[r] += interactions[u];
      }
    }
    return *std::max_element(load.begin(), load.end()) - *std::min_element(load.begin(), load.end());
  };
  const int64_t heaviest = *std::max_element(interactions.begin(), interactions.end());
  EXPECT_LE(spread(ShardingMode::kBalanced), heaviest);
  EXPECT_LT(spread(ShardingMode::kBalanced), spread(ShardingMode::kExactGlobalOrder));
}

TEST(UserSharderTest, LastStepMayBeEmptyOnSomeRanks) {
  // 9 users, 4 ranks of batch 2: step 0 takes 8 users, step 1 one user.
  for (auto mode : {ShardingMode::kBalanced, ShardingMode::kExactGlobalOrder}) {
    const auto plan = UserSharder(std::vector<int64_t>(9, 1), 4, Options(mode, 2)).Plan(1);
    ASSERT_EQ(plan.steps(), 2);
    int empty = 0;
    for (int r = 0; r < 4; ++r) empty += plan.batch(1, r).empty();
    EXPECT_EQ(empty, 3);
  }
}

TEST(UserSharderTest, LocalSharesWeighRowsAndSumToOne) {
  const auto plan = UserSharder(std::vector<int64_t>(10, 1), 3, Options(ShardingMode::kExactGlobalOrder, 2)).Plan(1);
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
