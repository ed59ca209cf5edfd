// Full-ranking evaluation on a hand-made case with a test target that repeats an item of the
// user's history: excluded (a miss) by default, as in the reference (IISAN.md §9.9), ranked
// with eval.count_repeated_targets; and chunked evaluation of the popularity baseline and of a
// model against the ranking rules applied user by user.
#include "core/train/evaluation.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tests/core/train/reference_ranking.h"
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


// 30 users over 12 items whose sequences repeat items (so that some targets are excluded),
// with a popularity of ties, NaN, +inf and -inf: the popularity baseline, ranked in chunks of
// 1, 7 and all users, equals a per-user reference of the ranking rules.
TEST(EvaluationTest, ChunkedPopularityEqualsAPerUserReference) {
  std::mt19937 random(11);  // its raw output is the same everywhere (no distribution used)
  std::vector<std::vector<int32_t>> sequences;
  for (int u = 0; u < 30; ++u) {
    sequences.emplace_back();
    for (uint32_t k = 0, n = 4 + random() % 12; k < n; ++k) sequences.back().push_back(1 + random() % 12);
  }
  auto dataset = testing::SequenceDataset(12, sequences);
  const double nan = std::nan(""), inf = std::numeric_limits<double>::infinity();
  dataset.popularity = {1.0, 0.2, 0.2, nan, 0.1, 0.2, inf, -inf, 0.0, 0.0, 0.1, nan, 0.3};
  for (bool count_repeated : {false, true}) {
    for (Split split : {Split::kValid, Split::kTest}) {
      std::vector<int64_t> ranks;
      for (int64_t u = 0; u < dataset.num_users(); ++u) {
        const auto example = split == Split::kValid ? dataset.valid_example(u) : dataset.test_example(u);
        std::vector<int32_t> excluded(example.excluded.begin(), example.excluded.end());
        if (count_repeated) std::erase(excluded, example.target);
        ranks.push_back(testing::ReferenceRank(std::vector<float>(dataset.popularity.begin(), dataset.popularity.end()),
                                               example.target, excluded));
      }
      EvalOptions options;
      options.ks = {1, 3, 5, 10};
      options.count_repeated_targets = count_repeated;
      const auto expected = testing::ReferenceMetrics(ranks, options.ks);
      for (int64_t chunk : {int64_t{1}, int64_t{7}, dataset.num_users()}) {
        options.batch_size = chunk;
        const auto metrics = EvaluatePopularity(dataset, split, options);
        const std::string what = std::string(split == Split::kValid ? "valid" : "test") + ", chunks of " +
                                 std::to_string(chunk) + (count_repeated ? ", repeats counted" : "");
        EXPECT_EQ(metrics.users, dataset.num_users()) << what;
        EXPECT_EQ(metrics.hit_sum, expected.hit_sum) << what;
        for (size_t k = 0; k < options.ks.size(); ++k) {
          EXPECT_NEAR(metrics.ndcg_sum[k], expected.ndcg_sum[k], 1e-12) << what;
        }
      }
      if (!count_repeated && split == Split::kTest) {
        // The case covers what it is meant to: misses from excluded and NaN targets, and hits.
        EXPECT_GT(std::count(ranks.begin(), ranks.end(), 13), 3);
        EXPECT_GT(expected.hit_sum[3], 3);
      }
    }
  }
}

// A small IISAN model whose item 5 has NaN states (so users with it in their history score NaN
// everywhere, and it scores NaN as a target): the model's metrics for chunks of 1, 7 and all
// users equal those of every user's scores ranked one by one.
TEST(EvaluationTest, ChunkedModelEvaluationEqualsAPerUserReference) {
  std::vector<std::vector<int32_t>> sequences;
  for (int u = 0; u < 40; ++u) {
    sequences.emplace_back();
    for (int k = 0; k < 5 + u % 7; ++k) sequences.back().push_back(static_cast<int32_t>((3 * u + 5 * k) % 30 + 1));
  }
  const auto dataset = testing::SequenceDataset(30, sequences);
  RecommenderConfig config;
  config.method = Method::kIisan;
  config.modality = models::Modality::kText;
  config.side.hidden_size = 8;
  config.side.num_blocks = 2;
  torch::manual_seed(3);
  Recommender model(config);
  auto states = torch::randn({31, 2, 8});
  states[5].fill_(std::nanf(""));
  model->Prepare({states, torch::Tensor()}, {}, torch::kCPU);
  model->eval();

  EvalOptions options;
  options.ks = {1, 5, 10};
  torch::NoGradGuard no_grad;
  const auto table = model->ItemTable(ItemTableChunk(config, options.memory_mb));
  const int64_t users = dataset.num_users(), max_len = dataset.max_seq_len;
  auto histories = torch::zeros({users, max_len}, torch::kInt64);
  auto history = histories.accessor<int64_t, 2>();
  for (int64_t u = 0; u < users; ++u) {
    const auto input = dataset.test_example(u).input;
    const int64_t n = static_cast<int64_t>(input.size());
    for (int64_t k = 0; k < n; ++k) history[u][max_len - n + k] = input[k];
  }
  const auto scores = torch::matmul(model->UserVectors(histories, table), table.t()).contiguous();
  std::vector<int64_t> ranks;
  for (int64_t u = 0; u < users; ++u) {
    const auto example = dataset.test_example(u);
    const float* row = scores[u].data_ptr<float>();
    ranks.push_back(testing::ReferenceRank(std::vector<float>(row, row + scores.size(1)), example.target,
                                           example.excluded));
  }
  EXPECT_GT(std::count(ranks.begin(), ranks.end(), 31), 0) << "no NaN or excluded target";
  const auto expected = testing::ReferenceMetrics(ranks, options.ks);
  EXPECT_GT(expected.hit_sum[2], 0);
  const auto set = MakeEvaluationSet(dataset, Split::kTest, options, torch::kCPU);
  for (int64_t chunk : {int64_t{1}, int64_t{7}, users}) {
    options.batch_size = chunk;
    const auto metrics = EvaluateModel(model, set, options);
    EXPECT_EQ(metrics.users, users);
    EXPECT_EQ(metrics.hit_sum, expected.hit_sum) << "chunks of " << chunk;
    for (size_t k = 0; k < options.ks.size(); ++k) {
      EXPECT_NEAR(metrics.ndcg_sum[k], expected.ndcg_sum[k], 1e-12) << "chunks of " << chunk;
    }
    // The one-call form builds the same set.
    const auto again = EvaluateModel(model, dataset, Split::kTest, options);
    EXPECT_EQ(again.hit_sum, metrics.hit_sum);
    EXPECT_EQ(again.ndcg_sum, metrics.ndcg_sum);
  }
}

// A set built on "cuda" holds tensors on "cuda:0"; the model's options may still say "cuda"
// (the H200 runs failed on exactly that comparison before SameDevice).
TEST(EvaluationTest, SameDeviceTreatsAMissingIndexAsTheCurrentDevice) {
  const torch::Device cuda(torch::kCUDA), cuda0(torch::kCUDA, 0), cuda1(torch::kCUDA, 1);
  EXPECT_TRUE(SameDevice(cuda, cuda0));
  EXPECT_TRUE(SameDevice(cuda0, cuda));
  EXPECT_TRUE(SameDevice(cuda1, cuda1));
  EXPECT_FALSE(SameDevice(cuda0, cuda1));
  EXPECT_FALSE(SameDevice(torch::kCPU, cuda));
  EXPECT_TRUE(SameDevice(torch::kCPU, torch::kCPU));
}

TEST(EvaluationTest, ChunksHoldWhatTheMemoryBudgetAllows) {
  EvalOptions options;
  options.memory_mb = 1;
  EXPECT_EQ(EvaluationChunkUsers(options, 1024), 1024);
  EXPECT_EQ(EvaluationChunkUsers(options, 1000), 1048);
  EXPECT_EQ(EvaluationChunkUsers(options, int64_t{4} << 20), 1) << "a user larger than the budget";
  options.batch_size = 100;
  EXPECT_EQ(EvaluationChunkUsers(options, 1024), 100);
  options.memory_mb = 0;
  EXPECT_THROW(EvaluationChunkUsers(options, 1024), std::invalid_argument);
  options.memory_mb = kMaxEvalMemoryMb + 1;
  EXPECT_THROW(EvaluationChunkUsers(options, 1024), std::invalid_argument);
}

// The number of chunks a pass runs in (what a profile of the pass divides by): eval.memory_mb
// sizes them from the model's per-user bytes, eval.batch_size caps them.
TEST(EvaluationTest, ChunkCountFollowsTheMemoryBudgetAndTheCap) {
  std::vector<std::vector<int32_t>> sequences(40, std::vector<int32_t>{1, 2, 3, 4});
  const auto dataset = testing::SequenceDataset(30, sequences);
  EvalOptions options;
  const auto set = MakeEvaluationSet(dataset, Split::kTest, options, torch::kCPU);
  ASSERT_EQ(set.size(), 40);
  RecommenderConfig config;  // only its numbers are read: no model is built
  EXPECT_EQ(EvaluationChunks(config, set, options), 1) << "128 MiB holds every user of a small model";
  options.batch_size = 7;
  EXPECT_EQ(EvaluationChunks(config, set, options), 6);
  options.batch_size = int64_t{1} << 20;
  options.memory_mb = 1;
  config.user.embedding_dim = 8192;  // > 1 MiB of user-encoder activations a user
  EXPECT_EQ(EvaluationChunks(config, set, options), 40);
}

TEST(EvaluationTest, CachedItemTableChunkFollowsTheMemoryBudget) {
  // The item table's chunk is bounded by eval.memory_mb like the users' chunks are: at base
  // widths an item takes 2 x 7 x 768 x 2 x 4 = 86,016 bytes while it is embedded.
  RecommenderConfig config;  // cached IISAN, text and image, H = 768, K = 7
  ASSERT_EQ(CachedItemBytes(config), 86016);
  EXPECT_EQ(ItemTableChunk(config, 64), (int64_t{64} << 20) / 86016);  // 780
  EXPECT_EQ(ItemTableChunk(config, 1), 12);
  EXPECT_EQ(ItemTableChunk(config, 4096), kCachedItemTableChunk) << "capped";
  config.modality = models::Modality::kText;
  EXPECT_EQ(ItemTableChunk(config, 64), (int64_t{64} << 20) / 43008);
  config.side.hidden_size = int64_t{1} << 20;  // one item over the budget: one at a time
  EXPECT_EQ(ItemTableChunk(config, 1), 1);
  config.method = Method::kFft;
  EXPECT_EQ(ItemTableChunk(config, 1), kLiveItemTableChunk);
  config.method = Method::kIisan;
  EXPECT_THROW(ItemTableChunk(config, 0), std::invalid_argument);
}

TEST(EvaluationTest, ASetMustMatchTheOptionsAndTheModel) {
  const auto dataset = RepeatedTargetDataset();
  RecommenderConfig config;
  config.method = Method::kIisan;
  config.modality = models::Modality::kText;
  config.side.hidden_size = 8;
  config.side.num_blocks = 2;
  Recommender model(config);
  model->Prepare({torch::randn({6, 2, 8}), torch::Tensor()}, {}, torch::kCPU);
  EvalOptions options;
  const auto set = MakeEvaluationSet(dataset, Split::kTest, {0, 2}, /*count_repeated_targets=*/true, torch::kCPU);
  EXPECT_THROW(EvaluateModel(model, set, options), std::invalid_argument);
  EXPECT_THROW(MakeEvaluationSet(dataset, Split::kTest, {1, 3}, false, torch::kCPU), std::invalid_argument);
}

}  // namespace
}  // namespace iisan::train
