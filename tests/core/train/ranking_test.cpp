// Full-ranking metrics against hand-computed ranks, and chunked ranking against the rules applied
// user by user.
#include "core/train/ranking.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tests/core/train/reference_ranking.h"

namespace iisan::train {
namespace {

TEST(RankingTest, RanksCountHigherScoresAndSkipPaddingAndHistory) {
  // Items 0..5; column 0 is padding and must never count, even with the highest score.
  auto scores = torch::tensor({{9.0f, 0.5f, 0.9f, 0.1f, 0.7f, 0.3f},
                               {9.0f, 0.5f, 0.9f, 0.1f, 0.7f, 0.3f}});
  std::vector<int32_t> targets = {1, 1};
  std::vector<std::vector<int32_t>> excluded = {{}, {2, 4}};
  auto ranks = TargetRanks(scores, targets, excluded);
  EXPECT_EQ(ranks[0].item<int64_t>(), 3);  // items 2 and 4 score higher
  EXPECT_EQ(ranks[1].item<int64_t>(), 1);  // both excluded as history
}

TEST(RankingTest, TiesBreakByItemIdLowerFirst) {
  auto scores = torch::tensor({{0.0f, 1.0f, 1.0f, 1.0f}});
  std::vector<std::vector<int32_t>> none = {{}};
  EXPECT_EQ(TargetRanks(scores, std::vector<int32_t>{1}, none)[0].item<int64_t>(), 1);
  EXPECT_EQ(TargetRanks(scores, std::vector<int32_t>{3}, none)[0].item<int64_t>(), 3);
}

TEST(RankingTest, ExcludedTargetIsAMiss) {
  auto scores = torch::tensor({{0.0f, 5.0f, 1.0f, 1.0f}});
  std::vector<std::vector<int32_t>> excluded = {{1}};
  const auto rank = TargetRanks(scores, std::vector<int32_t>{1}, excluded)[0].item<int64_t>();
  EXPECT_GT(rank, 2);
}

TEST(RankingTest, ExcludedTargetMissesEvenWhenFewerThanKItemsRemain) {
  // Items 1..3, history {1, 3}, target 1: at -inf the target would rank 3rd (behind item 2 and
  // the padding column it ties with), a hit at K = 3. It ranks last, N + 1 = 4.
  auto scores = torch::tensor({{0.0f, 5.0f, 1.0f, 1.0f}});
  std::vector<std::vector<int32_t>> excluded = {{1, 3}};
  const auto ranks = TargetRanks(scores, std::vector<int32_t>{1}, excluded);
  EXPECT_EQ(ranks[0].item<int64_t>(), 4);
  RankingMetrics metrics({3});
  AccumulateRanks(ranks, metrics);
  EXPECT_EQ(metrics.hr(3), 0.0);
}

TEST(RankingTest, ANonFiniteTargetScoreRanksLast) {
  // NaN compares false with everything: without care the target would rank first.
  const float nan = std::nanf("");
  auto scores = torch::tensor({{0.0f, nan, nan, nan, nan}, {0.0f, nan, 1.0f, 2.0f, 3.0f}, {0.0f, 4.0f, nan, 1.0f, 2.0f}});
  std::vector<std::vector<int32_t>> none = {{}, {}, {}};
  const auto ranks = TargetRanks(scores, std::vector<int32_t>{2, 1, 1}, none);
  EXPECT_EQ(ranks[0].item<int64_t>(), 5) << "all-NaN scores: no hit";
  EXPECT_EQ(ranks[1].item<int64_t>(), 5) << "a NaN target ranks behind every item";
  EXPECT_EQ(ranks[2].item<int64_t>(), 1) << "a finite target is not pushed down by another item's NaN";
  RankingMetrics metrics({1, 3});
  AccumulateRanks(ranks.slice(0, 0, 2), metrics);
  EXPECT_EQ(metrics.hr(3), 0.0);
}

TEST(RankingTest, MetricsAverageHitsAndDiscountedGains) {
  RankingMetrics metrics({1, 3});
  AccumulateRanks(torch::tensor({1, 2, 4}), metrics);
  EXPECT_EQ(metrics.users, 3);
  EXPECT_NEAR(metrics.hr(1), 1.0 / 3, 1e-12);
  EXPECT_NEAR(metrics.hr(3), 2.0 / 3, 1e-12);
  EXPECT_NEAR(metrics.ndcg(3), (1.0 + 1.0 / std::log2(3.0)) / 3, 1e-12);
  EXPECT_THROW(metrics.hr(10), std::out_of_range);
}

TEST(RankingTest, MergeAddsSumsNotMeans) {
  RankingMetrics a({10}), b({10});
  AccumulateRanks(torch::tensor({1, 20}), a);
  AccumulateRanks(torch::tensor({3}), b);
  a.Merge(b);
  EXPECT_EQ(a.users, 3);
  EXPECT_NEAR(a.hr(10), 2.0 / 3, 1e-12);
}


// Scores [40, 9] of a few values (ties everywhere), NaN, +inf and -inf, and excluded lists that
// sometimes hold the target: ranked in chunks of 1, 7 and 40 users, every rank equals the
// per-user reference, and the sums do not depend on the chunking.
TEST(RankingTest, ChunkedRanksAndSumsEqualAPerUserReference) {
  const int64_t users = 40, columns = 9;
  const float nan = std::nanf(""), inf = std::numeric_limits<float>::infinity();
  const std::vector<float> values = {0.0f, 1.0f, 1.0f, 2.0f, nan, inf, -inf, 0.5f};
  std::mt19937 random(7);  // its raw output is the same everywhere (no distribution used)
  std::vector<std::vector<float>> rows(users, std::vector<float>(columns));
  std::vector<int32_t> targets(users);
  std::vector<std::vector<int32_t>> excluded(users);
  std::vector<float> flat;
  std::vector<int64_t> expected_ranks;
  int nan_targets = 0, excluded_targets = 0, tied_targets = 0;
  for (int64_t u = 0; u < users; ++u) {
    for (auto& score : rows[u]) score = values[random() % values.size()];
    targets[u] = static_cast<int32_t>(1 + random() % (columns - 1));
    for (int32_t item = 1; item < columns; ++item) {
      if (random() % 4 == 0) excluded[u].push_back(item);
    }
    flat.insert(flat.end(), rows[u].begin(), rows[u].end());
    expected_ranks.push_back(testing::ReferenceRank(rows[u], targets[u], excluded[u]));
    const float t = rows[u][targets[u]];
    const bool out = std::find(excluded[u].begin(), excluded[u].end(), targets[u]) != excluded[u].end();
    excluded_targets += out;
    nan_targets += !out && std::isnan(t);
    tied_targets += !out && std::count(rows[u].begin() + 1, rows[u].begin() + targets[u], t) > 0;
  }
  // The case covers what it is meant to.
  EXPECT_GT(excluded_targets, 0);
  EXPECT_GT(nan_targets, 0);
  EXPECT_GT(tied_targets, 0);

  const auto scores = torch::tensor(flat).view({users, columns});
  const auto ranking = MakeRankingTargets(targets, excluded, columns);
  const std::vector<int> ks = {1, 2, 3, 5};
  const auto expected = testing::ReferenceMetrics(expected_ranks, ks);
  std::vector<RankingMetrics> results;
  for (int64_t chunk : {int64_t{1}, int64_t{7}, users}) {
    RankAccumulator accumulator(ks, torch::kCPU);
    std::vector<torch::Tensor> parts;
    for (int64_t begin = 0; begin < users; begin += chunk) {
      const int64_t end = std::min(users, begin + chunk);
      parts.push_back(RankTargets(scores.slice(0, begin, end).clone(), ranking, begin));
      accumulator.Add(parts.back());
    }
    const auto ranks = torch::cat(parts);
    EXPECT_TRUE(torch::equal(ranks, torch::tensor(expected_ranks))) << "chunks of " << chunk << ":\n" << ranks;
    results.push_back(accumulator.Result());
    EXPECT_EQ(results.back().users, users);
    EXPECT_EQ(results.back().hit_sum, expected.hit_sum) << "chunks of " << chunk;
    for (size_t k = 0; k < ks.size(); ++k) EXPECT_NEAR(results.back().ndcg_sum[k], expected.ndcg_sum[k], 1e-12);
    EXPECT_EQ(results.back().ndcg_sum, results.front().ndcg_sum) << "chunks of " << chunk << " against 1";
  }
  // TargetRanks, the one-call form, agrees.
  EXPECT_TRUE(torch::equal(TargetRanks(scores, targets, excluded), torch::tensor(expected_ranks)));
}

TEST(RankingTest, RankTargetsRefusesWhatDoesNotFit) {
  const std::vector<int32_t> targets = {1, 2};
  const std::vector<std::vector<int32_t>> excluded = {{3}, {}};
  const auto ranking = MakeRankingTargets(targets, excluded, 4);
  EXPECT_THROW(RankTargets(torch::zeros({2, 5}), ranking, 0), std::invalid_argument);  // columns
  EXPECT_THROW(RankTargets(torch::zeros({2, 4}), ranking, 1), std::invalid_argument);  // users past the end
  EXPECT_THROW(RankTargets(torch::zeros({2, 4}, torch::kFloat64), ranking, 0), std::invalid_argument);
  EXPECT_EQ(RankTargets(torch::zeros({1, 4}), ranking, 1)[0].item<int64_t>(), 2);  // behind item 1's tie
  // An item id outside 0..N would land in another user's row: refused, naming the user.
  try {
    MakeRankingTargets(targets, std::vector<std::vector<int32_t>>{{}, {4}}, 4);
    ADD_FAILURE() << "item 4 of 4 columns was accepted";
  } catch (const std::invalid_argument& error) {
    EXPECT_NE(std::string(error.what()).find("user 1's excluded item 4"), std::string::npos) << error.what();
  }
  EXPECT_THROW(MakeRankingTargets(std::vector<int32_t>{0}, std::vector<std::vector<int32_t>>{{}}, 4),
               std::invalid_argument);
}

TEST(RankingTest, AccumulatorCountsRanksBeyondTheLargestKAsMisses) {
  RankAccumulator accumulator({2, 1}, torch::kCPU);
  accumulator.Add(torch::tensor({1, 2, 3, 1000000}));
  accumulator.Add(torch::tensor({2}));
  const auto metrics = accumulator.Result();
  EXPECT_EQ(metrics.users, 5);
  EXPECT_EQ(metrics.hit_sum, (std::vector<double>{3.0, 1.0}));
  EXPECT_DOUBLE_EQ(metrics.ndcg_sum[0], 1.0 + 2.0 / std::log2(3.0));
  EXPECT_THROW(RankAccumulator({0}, torch::kCPU), std::invalid_argument);
}

}  // namespace
}  // namespace iisan::train
