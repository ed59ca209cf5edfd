// InBatchSoftmaxLoss against a loop-by-loop transcription of the reference's masking rules.
#include "core/models/loss.h"

#include <cmath>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tests/core/models/model_test_util.h"

namespace iisan::models {
namespace {

using testing::ExpectErrorContaining;

// IISAN.md §3.5 one logit at a time: subtract log-popularity, mask padding columns, then mask
// every column holding one of the user's own ids except the row's positive, then average the
// cross-entropy of the real rows.
double ReferenceLoss(const torch::Tensor& user_out, const torch::Tensor& item_emb, const torch::Tensor& item_ids,
                     const torch::Tensor& log_mask, const torch::Tensor& log_popularity) {
  const int64_t batch = log_mask.size(0);
  const int64_t length = log_mask.size(1);
  const auto ids = item_ids.accessor<int64_t, 2>();
  const auto mask = log_mask.accessor<double, 2>();
  double total = 0;
  int64_t rows = 0;
  for (int64_t i = 0; i < batch; ++i) {
    for (int64_t j = 0; j < length; ++j) {
      if (mask[i][j] == 0) continue;
      const int64_t positive = i * (length + 1) + j + 1;
      std::vector<double> logits;
      for (int64_t u = 0; u < batch; ++u) {
        for (int64_t k = 0; k <= length; ++k) {
          const int64_t column = u * (length + 1) + k;
          const int64_t id = ids[u][k];
          double logit = (user_out[i][j] * item_emb[u][k]).sum().item<double>() - log_popularity[id].item<double>();
          const bool padding = k < length && mask[u][k] == 0;
          if (padding) logit = -1e4;
          bool own = false;
          for (int64_t m = 0; m <= length; ++m) own = own || ids[i][m] == id;
          if (own && column != positive) logit = -1e4;
          logits.push_back(logit);
        }
      }
      double max = logits[0];
      for (double logit : logits) max = std::max(max, logit);
      double sum = 0;
      for (double logit : logits) sum += std::exp(logit - max);
      total += max + std::log(sum) - logits[positive];
      ++rows;
    }
  }
  return total / static_cast<double>(rows);
}

struct Batch {
  torch::Tensor user_out, item_emb, item_ids, log_mask, log_popularity;
};

// B = 3, L = 4, left padded; item 5 repeats inside user 0 (as an input and as a target) and
// item 2 is shared by users 0 and 2.
// The same values for every dtype, so that a float run can be checked against the double one.
Batch MakeBatch(torch::ScalarType dtype) {
  torch::manual_seed(3);
  auto popularity = torch::rand({10}, torch::kDouble) + 0.1;
  popularity = popularity / popularity.sum();
  popularity[0] = 1.0;
  return {torch::randn({3, 4, 5}, torch::kDouble).to(dtype), torch::randn({3, 5, 5}, torch::kDouble).to(dtype),
          torch::tensor({{0, 5, 2, 5, 7}, {0, 0, 0, 3, 4}, {1, 2, 6, 8, 9}}, torch::kInt64),
          torch::tensor({{0, 1, 1, 1}, {0, 0, 0, 1}, {1, 1, 1, 1}}, torch::kDouble).to(dtype),
          popularity.log().to(dtype)};
}

TEST(InBatchSoftmaxLossTest, MatchesLoopReference) {
  const auto b = MakeBatch(torch::kDouble);
  const auto loss = InBatchSoftmaxLoss(b.user_out, b.item_emb, b.item_ids, b.log_mask, b.log_popularity);
  EXPECT_EQ(loss.dim(), 0);
  EXPECT_NEAR(loss.item<double>(), ReferenceLoss(b.user_out, b.item_emb, b.item_ids, b.log_mask, b.log_popularity),
              1e-10);
}

TEST(InBatchSoftmaxLossTest, FloatInputsAndGradients) {
  const auto b = MakeBatch(torch::kFloat);
  const auto user_out = b.user_out.clone().requires_grad_();
  const auto item_emb = b.item_emb.clone().requires_grad_();
  const auto loss = InBatchSoftmaxLoss(user_out, item_emb, b.item_ids, b.log_mask, b.log_popularity);
  EXPECT_EQ(loss.scalar_type(), torch::kFloat);
  const auto d = MakeBatch(torch::kDouble);
  EXPECT_NEAR(loss.item<double>(), ReferenceLoss(d.user_out, d.item_emb, d.item_ids, d.log_mask, d.log_popularity),
              1e-5);
  loss.backward();
  EXPECT_TRUE(torch::isfinite(user_out.grad()).all().item<bool>());
  // Padded rows (user 1's first three) take no part in the loss.
  EXPECT_TRUE(torch::equal(user_out.grad()[1].slice(0, 0, 3), torch::zeros({3, 5})));
}

TEST(InBatchSoftmaxLossTest, ShardsByUserAddUpToTheWholeBatch) {
  // Data-parallel form: each rank scores its own users' rows against the whole batch's items;
  // the shards' losses and gradients add up to the one-process loss and gradients.
  const auto b = MakeBatch(torch::kDouble);
  const auto user_out = b.user_out.clone().requires_grad_();
  const auto item_emb = b.item_emb.clone().requires_grad_();
  const auto whole = InBatchSoftmaxLoss(user_out, item_emb, b.item_ids, b.log_mask, b.log_popularity);
  whole.backward();
  const auto user_grad = user_out.grad().clone();
  const auto item_grad = item_emb.grad().clone();
  user_out.mutable_grad().zero_();
  item_emb.mutable_grad().zero_();
  auto first = InBatchSoftmaxLossShard(user_out.narrow(0, 0, 1), 0, item_emb, b.item_ids, b.log_mask, b.log_popularity);
  auto rest = InBatchSoftmaxLossShard(user_out.narrow(0, 1, 2), 1, item_emb, b.item_ids, b.log_mask, b.log_popularity);
  EXPECT_NEAR((first + rest).item<double>(), whole.item<double>(), 1e-12);
  (first + rest).backward();
  EXPECT_TRUE(torch::allclose(user_out.grad(), user_grad, 1e-10, 1e-12));
  EXPECT_TRUE(torch::allclose(item_emb.grad(), item_grad, 1e-10, 1e-12));
  EXPECT_THROW(InBatchSoftmaxLossShard(user_out.narrow(0, 1, 2), 2, item_emb, b.item_ids, b.log_mask,
                                       b.log_popularity),
               std::runtime_error);
}

TEST(InBatchSoftmaxLossTest, KeepsTheRepeatedPositiveAndMasksItsTwin) {
  // Item 5 is at columns 1 and 3 of user 0 and in user 1's sequence too. Column 3 is the
  // positive of row (0, 2); column 1 is the positive of no counted row, so every counted row
  // masks it: scoring it very high must not change the loss, while scoring column 3 high must.
  torch::manual_seed(4);
  const auto ids = torch::tensor({{0, 5, 2, 5, 7}, {0, 0, 5, 4, 6}}, torch::kInt64);
  const auto log_mask = torch::tensor({{0, 1, 1, 1}, {0, 0, 1, 1}}, torch::kDouble);
  const auto user_out = torch::randn({2, 4, 5}, torch::kDouble);
  const auto item_emb = torch::randn({2, 5, 5}, torch::kDouble);
  const auto log_popularity = torch::full({8}, std::log(1.0 / 7));
  log_popularity[0] = 0.0;
  auto boosted = [&](int64_t column) {
    auto emb = item_emb.clone();
    emb[0][column] = user_out[0][2] * 10;
    return emb;
  };
  const double plain = InBatchSoftmaxLoss(user_out, item_emb, ids, log_mask, log_popularity).item<double>();
  EXPECT_NEAR(plain, ReferenceLoss(user_out, item_emb, ids, log_mask, log_popularity), 1e-10);
  EXPECT_NEAR(InBatchSoftmaxLoss(user_out, boosted(1), ids, log_mask, log_popularity).item<double>(), plain, 1e-12);
  const double positive_boosted = InBatchSoftmaxLoss(user_out, boosted(3), ids, log_mask, log_popularity).item<double>();
  EXPECT_LT(positive_boosted, plain);
  EXPECT_NEAR(positive_boosted, ReferenceLoss(user_out, boosted(3), ids, log_mask, log_popularity), 1e-10);
}

TEST(InBatchSoftmaxLossTest, RejectsMismatchedShapes) {
  const auto b = MakeBatch(torch::kFloat);
  ExpectErrorContaining(
      [&] { InBatchSoftmaxLoss(b.user_out, b.item_emb.slice(1, 0, 4), b.item_ids, b.log_mask, b.log_popularity); },
      {"item_emb", "[3, 5, 5]"});
  ExpectErrorContaining(
      [&] { InBatchSoftmaxLoss(b.user_out, b.item_emb, b.item_ids.to(torch::kInt32), b.log_mask, b.log_popularity); },
      {"item_ids", "int64"});
  ExpectErrorContaining(
      [&] { InBatchSoftmaxLoss(b.user_out.slice(1, 0, 3), b.item_emb, b.item_ids, b.log_mask, b.log_popularity); },
      {"user_out"});
}

}  // namespace
}  // namespace iisan::models
