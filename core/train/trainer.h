// Training of cached IISAN: Adam with IISAN's optimizer groups (IISAN.md §6), one pass over the
// users per epoch in a seeded order, validation HR@10 after every epoch, early stopping, and the
// test metrics taken at the best validation epoch. Also the popularity baseline, ranked the same
// way.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/optim/optimizer.h>
#include <torch/types.h>

#include "core/data/dataset.h"
#include "core/train/ranking.h"
#include "core/train/recommender.h"

namespace iisan::train {

struct LearningRates {
  double recsys = 2e-4;
  double text = 5e-5;
  double image = 1e-4;
  double adapter_text = 1e-4;
  double adapter_image = 1e-4;
};

struct TrainOptions {
  int64_t batch_size = 64;
  int epochs = 100;
  int patience = 10;               // stop after `patience` + 1 epochs without a new best
  int64_t max_steps_per_epoch = 0;  // 0 = the whole epoch
  int64_t eval_batch_size = 256;
  std::vector<int> ks = {5, 10, 20};
  int selection_k = 10;  // model selection on validation HR@selection_k
  LearningRates lr;
  uint64_t seed = 12345;
  torch::Device device = torch::kCPU;
};

enum class Split { kValid, kTest };

struct EpochRecord {
  int epoch = 0;
  double train_loss = 0.0;
  int64_t train_steps = 0;
  double train_seconds = 0.0;
  double eval_seconds = 0.0;
  RankingMetrics valid;
  std::optional<RankingMetrics> test;  // evaluated when validation reached a new best
  bool best = false;
  nlohmann::ordered_json ToJson() const;
};

struct TrainResult {
  int best_epoch = 0;
  int epochs_run = 0;
  RankingMetrics best_valid;
  RankingMetrics test;  // at the best epoch
  double mean_train_seconds = 0.0;
  double mean_eval_seconds = 0.0;
};

class Trainer {
 public:
  Trainer(const data::Dataset& dataset, ItemStates states, IisanRecommender model, TrainOptions options);

  TrainResult Fit(const std::function<void(const EpochRecord&)>& on_epoch);
  RankingMetrics Evaluate(Split split);
  int64_t trainable_parameters() const;

 private:
  double TrainEpoch(int epoch, int64_t& steps);

  const data::Dataset& dataset_;
  ItemStates states_;
  IisanRecommender model_;
  TrainOptions options_;
  torch::Tensor log_popularity_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
};

// The popularity baseline: every user gets items ranked by train-split popularity, with the
// same history exclusion and tie-breaking as the model.
RankingMetrics EvaluatePopularity(const data::Dataset& dataset, Split split, const std::vector<int>& ks);

// Deterministic permutation of 0..n-1 (Fisher–Yates over splitmix64): the same on every
// platform and standard library, unlike std::shuffle.
std::vector<int64_t> SeededPermutation(int64_t n, uint64_t seed);

}  // namespace iisan::train
