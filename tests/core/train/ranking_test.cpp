// Full-ranking metrics against hand-computed ranks.
#include "core/train/ranking.h"

#include <cmath>

#include <gtest/gtest.h>
#include <torch/torch.h>

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

}  // namespace
}  // namespace iisan::train
