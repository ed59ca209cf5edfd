// Full-ranking evaluation on a hand-made case with a test target that repeats an item of the
// user's history: excluded (a miss) by default, as in the reference (IISAN.md §9.9), ranked
// with eval.count_repeated_targets.
#include "core/train/evaluation.h"

#include <cmath>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tests/core/train/sequence_dataset.h"

namespace iisan::train {
namespace {

// 5 items. User 0: 1 2 3 1, its test target 1 repeats its first item (history 1 2 3); user 1:
// 2 3 4 5, test target 5 (history 2 3 4). Train-split counts (the sequences less their last
// two items): item 1 once, item 2 twice, item 3 once, items 4 and 5 never.
data::Dataset RepeatedTargetDataset() { return testing::SequenceDataset(5, {{1, 2, 3, 1}, {2, 3, 4, 5}}); }

TEST(EvaluationTest, PopularityCountsARepeatedTargetOnlyWhenAskedTo) {
  const auto dataset = RepeatedTargetDataset();
  ASSERT_EQ(dataset.test_example(0).target, 1);
  // User 1: items 1 and 5 remain; item 1 (p = 1/4) ranks above the target 5 (p = 0): rank 2.
  const double user1_ndcg = 1.0 / std::log2(3.0);

  EvalOptions reference;
  reference.ks = {1, 5};
  const auto excluded = EvaluatePopularity(dataset, Split::kTest, reference);
  // User 0's target 1 is excluded with its history: a miss at every K.
  EXPECT_DOUBLE_EQ(excluded.hr(1), 0.0);
  EXPECT_DOUBLE_EQ(excluded.hr(5), 0.5);
  EXPECT_DOUBLE_EQ(excluded.ndcg(5), user1_ndcg / 2);

  EvalOptions counted = reference;
  counted.count_repeated_targets = true;
  const auto ranked = EvaluatePopularity(dataset, Split::kTest, counted);
  // User 0: items 1, 4 and 5 remain (2 and 3 stay excluded); item 1 (p = 1/4) ranks first.
  EXPECT_DOUBLE_EQ(ranked.hr(1), 0.5);
  EXPECT_DOUBLE_EQ(ranked.hr(5), 1.0);
  EXPECT_DOUBLE_EQ(ranked.ndcg(5), (1.0 + user1_ndcg) / 2);
  EXPECT_EQ(ranked.users, 2);

  // Validation targets (3 and 4) repeat nothing: the setting changes nothing there.
  const auto valid_reference = EvaluatePopularity(dataset, Split::kValid, reference);
  const auto valid_counted = EvaluatePopularity(dataset, Split::kValid, counted);
  EXPECT_EQ(valid_reference.hit_sum, valid_counted.hit_sum);
  EXPECT_EQ(valid_reference.ndcg_sum, valid_counted.ndcg_sum);
}

TEST(EvaluationTest, AModelCountsARepeatedTargetOnlyWhenAskedTo) {
  // With 5 items and K = 5 every target that is ranked at all is a hit, whatever the weights.
  const auto dataset = RepeatedTargetDataset();
  RecommenderConfig config;
  config.method = Method::kIisan;
  config.modality = models::Modality::kText;
  config.side.hidden_size = 8;
  config.side.num_blocks = 2;
  torch::manual_seed(1);
  Recommender model(config);
  model->Prepare({torch::randn({6, 2, 8}), torch::Tensor()}, {}, torch::kCPU);
  EvalOptions options;
  options.ks = {5};
  EXPECT_DOUBLE_EQ(EvaluateModel(model, dataset, Split::kTest, options).hr(5), 0.5);
  options.count_repeated_targets = true;
  EXPECT_DOUBLE_EQ(EvaluateModel(model, dataset, Split::kTest, options).hr(5), 1.0);
}

}  // namespace
}  // namespace iisan::train
