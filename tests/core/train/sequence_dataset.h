// A dataset made in memory for trainer tests: `items` items named I1.., titled "title k", without
// images, and one user per sequence, with the train-split popularity filled in as LoadDataset
// would (row 0 is padding).
#pragma once

#include <string>
#include <vector>

#include "core/data/dataset.h"

namespace iisan::train::testing {

inline data::Dataset SequenceDataset(int items, const std::vector<std::vector<int32_t>>& sequences) {
  data::Dataset dataset;
  dataset.max_seq_len = 10;
  dataset.item_ids.push_back("");
  dataset.titles.push_back("");
  dataset.image_paths.emplace_back();
  for (int i = 1; i <= items; ++i) {
    dataset.item_ids.push_back("I" + std::to_string(i));
    dataset.titles.push_back("title " + std::to_string(i));
    dataset.image_paths.emplace_back();
  }
  for (size_t u = 0; u < sequences.size(); ++u) {
    dataset.user_ids.push_back("U" + std::to_string(u));
    dataset.sequences.push_back(sequences[u]);
  }
  std::vector<double> counts(items + 1, 0.0);
  double total = 0;
  for (int64_t u = 0; u < dataset.num_users(); ++u) {
    for (int32_t item : dataset.train_sequence(u)) counts[item] += 1, total += 1;
  }
  dataset.popularity.assign(items + 1, 0.0);
  for (int i = 1; i <= items; ++i) dataset.popularity[i] = counts[i] / total;
  dataset.popularity[0] = 1.0;
  return dataset;
}

}  // namespace iisan::train::testing
