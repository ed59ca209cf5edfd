// Batching, the seeded user order, the popularity baseline and the training loop on a small
// hand-made dataset with random cached states.
#include "core/train/trainer.h"

#include <algorithm>
#include <numeric>

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace iisan::train {
namespace {

TEST(TrainerTest, SeededPermutationIsADeterministicPermutation) {
  const auto a = SeededPermutation(1000, 7);
  const auto b = SeededPermutation(1000, 7);
  const auto c = SeededPermutation(1000, 8);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  auto sorted = a;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int64_t> expected(1000);
  std::iota(expected.begin(), expected.end(), 0);
  EXPECT_EQ(sorted, expected);
}

TEST(TrainerTest, SequenceBatchIsLeftPaddedWithTheReferenceMask) {
  // IISAN.md §2.6: ids = [0]*(L+1-n) + s, log_mask = [0]*(L+1-n) + [1]*(n-1).
  const auto batch = MakeSequenceBatch({{5, 6, 7}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}}, 10);
  EXPECT_TRUE(torch::equal(batch.item_ids[0], torch::tensor({0, 0, 0, 0, 0, 0, 0, 0, 5, 6, 7}, torch::kInt64)));
  EXPECT_TRUE(torch::equal(batch.log_mask[0], torch::tensor({0, 0, 0, 0, 0, 0, 0, 0, 1, 1}, torch::kFloat32)));
  EXPECT_TRUE(batch.log_mask[1].eq(1).all().item<bool>());
  EXPECT_THROW(MakeSequenceBatch({{1}}, 10), std::invalid_argument);
  EXPECT_THROW(MakeSequenceBatch({std::vector<int32_t>(12, 1)}, 10), std::invalid_argument);
}

// 40 users over 30 items; user u walks items u % 30 + 1, +1, +2, … so that the next item is
// predictable from the last one.
data::Dataset WalkDataset() {
  data::Dataset dataset;
  dataset.max_seq_len = 10;
  dataset.item_ids.push_back("");
  dataset.titles.push_back("");
  dataset.image_paths.emplace_back();
  for (int i = 1; i <= 30; ++i) {
    dataset.item_ids.push_back("I" + std::to_string(i));
    dataset.titles.push_back("title " + std::to_string(i));
    dataset.image_paths.emplace_back();
  }
  for (int u = 0; u < 40; ++u) {
    dataset.user_ids.push_back("U" + std::to_string(u));
    std::vector<int32_t> seq;
    for (int k = 0; k < 6 + u % 5; ++k) seq.push_back(static_cast<int32_t>((u + k) % 30 + 1));
    dataset.sequences.push_back(seq);
  }
  std::vector<double> counts(31, 0.0);
  double total = 0;
  for (int64_t u = 0; u < dataset.num_users(); ++u) {
    for (int32_t item : dataset.train_sequence(u)) counts[item] += 1, total += 1;
  }
  dataset.popularity.resize(31);
  for (int i = 1; i <= 30; ++i) dataset.popularity[i] = counts[i] / total;
  dataset.popularity[0] = 1.0;
  return dataset;
}

TEST(TrainerTest, PopularityBaselineRanksByTrainCounts) {
  const auto dataset = WalkDataset();
  const auto metrics = EvaluatePopularity(dataset, Split::kTest, {5, 10, 20});
  EXPECT_EQ(metrics.users, 40);
  // Recompute HR@10 by brute force: rank = 1 + items (not in history) more popular, ties by id.
  int hits = 0;
  for (int64_t u = 0; u < dataset.num_users(); ++u) {
    const auto example = dataset.test_example(u);
    std::vector<bool> excluded(31, false);
    for (int32_t item : example.excluded) excluded[item] = true;
    int rank = 1;
    for (int32_t item = 1; item <= 30; ++item) {
      if (excluded[item] || item == example.target) continue;
      const double p = dataset.popularity[item], t = excluded[example.target] ? -1 : dataset.popularity[example.target];
      rank += p > t || (p == t && item < example.target);
    }
    if (excluded[example.target]) rank = 31;
    hits += rank <= 10;
  }
  EXPECT_NEAR(metrics.hr(10), hits / 40.0, 1e-12);
}

struct TrainedRun {
  TrainResult result;
  std::vector<double> losses;
};

TrainedRun TrainWalk(uint64_t seed) {
  const auto dataset = WalkDataset();
  torch::manual_seed(0);
  ItemStates states{torch::randn({31, 3, 16}), torch::Tensor()};
  states.text[0].zero_();
  models::IisanConfig item;
  item.hidden_size = 16;
  item.num_blocks = 3;
  item.modality = models::Modality::kText;
  models::UserEncoderConfig user;
  TrainOptions options;
  options.batch_size = 8;
  options.epochs = 6;
  options.patience = 100;
  options.seed = seed;
  options.lr = {1e-2, 1e-2, 1e-2, 1e-2, 1e-2};
  torch::manual_seed(seed);
  IisanRecommender model(item, user);
  Trainer trainer(dataset, states, model, options);
  TrainedRun run;
  run.result = trainer.Fit([&](const EpochRecord& record) { run.losses.push_back(record.train_loss); });
  return run;
}

TEST(TrainerTest, TrainingLowersTheLossAndIsReproducible) {
  const auto first = TrainWalk(3);
  const auto second = TrainWalk(3);
  ASSERT_EQ(first.losses.size(), 6u);
  EXPECT_LT(first.losses.back(), first.losses.front());
  EXPECT_EQ(first.losses, second.losses);
  EXPECT_EQ(first.result.best_epoch, second.result.best_epoch);
  EXPECT_EQ(first.result.test.hit_sum, second.result.test.hit_sum);
  EXPECT_EQ(first.result.test.users, 40);
}

}  // namespace
}  // namespace iisan::train
