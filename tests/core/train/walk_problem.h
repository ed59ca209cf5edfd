// The small training problem of the checkpoint and fit-control tests: 45 users walking over 30
// items, a cached text IISAN of width 16 with dropout (so that generator states matter), and
// options that train it in 6 steps an epoch.
#pragma once

#include <limits>

#include <torch/torch.h>

#include "core/train/trainer.h"
#include "tests/core/train/sequence_dataset.h"

namespace iisan::train::testing {

// 45 users over 30 items (6 steps of 8, the last one short); user u walks items u % 30 + 1,
// +1, ...; every fourth user has a full-length training sequence (11 ids, no padding).
inline data::Dataset WalkDataset() {
  std::vector<std::vector<int32_t>> sequences;
  for (int u = 0; u < 45; ++u) {
    std::vector<int32_t> seq;
    const int length = u % 4 == 0 ? 13 : 6 + u % 5;
    for (int k = 0; k < length; ++k) seq.push_back(static_cast<int32_t>((u + k) % 30 + 1));
    sequences.push_back(seq);
  }
  return SequenceDataset(30, sequences);
}

struct Problem {
  data::Dataset dataset = WalkDataset();
  TrainOptions options;
  Problem() {
    options.batch_size = 8;
    options.epochs = 4;
    options.patience = 100;
    options.seed = 5;
    options.lr = {1e-2, 1e-2, 1e-2, 1e-2, 1e-2};
  }
  // The same weights for the same seed; dropout on, so the generator states matter. A
  // `nan_item` > 0 gets NaN cached states: any batch with it has a NaN loss.
  Recommender Model(uint64_t init_seed = 1, int nan_item = 0) const {
    torch::manual_seed(0);
    ItemStates states{torch::randn({31, 3, 16}), torch::Tensor()};
    states.text[0].zero_();
    if (nan_item > 0) states.text[nan_item].fill_(std::numeric_limits<float>::quiet_NaN());
    RecommenderConfig config;
    config.method = Method::kIisan;
    config.modality = models::Modality::kText;
    config.side.hidden_size = 16;
    config.side.num_blocks = 3;
    config.side.modality = models::Modality::kText;
    config.user.dropout = 0.2;
    torch::manual_seed(init_seed);
    Recommender model(config);
    model->Prepare(states, {}, torch::kCPU);
    torch::manual_seed(options.seed);
    return model;
  }
};

}  // namespace iisan::train::testing
