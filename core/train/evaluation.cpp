// Evaluation batches: left-padded histories, targets and exclusions per user, scored on the
// model's device against the whole item table.
#include "core/train/evaluation.h"

#include <algorithm>

#include <torch/torch.h>

namespace iisan::train {
namespace {

struct SplitBatch {
  torch::Tensor histories;  // [U, L] left-padded
  std::vector<int32_t> targets;
  std::vector<std::vector<int32_t>> excluded;
};

SplitBatch MakeSplitBatch(const data::Dataset& dataset, Split split, int64_t begin, int64_t end, int64_t max_len,
                          bool count_repeated_targets) {
  SplitBatch batch;
  batch.histories = torch::zeros({end - begin, max_len}, torch::kInt64);
  auto hist = batch.histories.accessor<int64_t, 2>();
  for (int64_t u = begin; u < end; ++u) {
    const auto example = split == Split::kValid ? dataset.valid_example(u) : dataset.test_example(u);
    const int64_t n = static_cast<int64_t>(example.input.size());
    for (int64_t k = 0; k < n; ++k) hist[u - begin][max_len - n + k] = example.input[k];
    batch.targets.push_back(example.target);
    auto& excluded = batch.excluded.emplace_back(example.excluded.begin(), example.excluded.end());
    if (count_repeated_targets) std::erase(excluded, example.target);
  }
  return batch;
}

}  // namespace

RankingMetrics EvaluateModel(Recommender& model, const data::Dataset& dataset, Split split, const EvalOptions& options,
                             DataParallel* parallel) {
  if (options.batch_size < 1) throw std::invalid_argument("EvaluateModel: the batch size must be at least 1");
  model->eval();
  torch::NoGradGuard no_grad;
  const auto table = model->ItemTable(options.batch_size);
  const int64_t users = dataset.num_users();
  const auto [first, last] = parallel ? parallel->EvaluationUsers(users) : std::pair<int64_t, int64_t>(0, users);
  RankingMetrics metrics(options.ks);
  for (int64_t begin = first; begin < last; begin += options.batch_size) {
    const int64_t end = std::min(last, begin + options.batch_size);
    auto batch = MakeSplitBatch(dataset, split, begin, end, dataset.max_seq_len, options.count_repeated_targets);
    auto user_vectors = model->UserVectors(batch.histories.to(model->device()), table);
    auto scores = torch::matmul(user_vectors, table.t());
    AccumulateRanks(TargetRanks(scores, batch.targets, batch.excluded), metrics);
  }
  return parallel ? parallel->ReduceMetrics(metrics, users) : metrics;
}

RankingMetrics EvaluatePopularity(const data::Dataset& dataset, Split split, const EvalOptions& options) {
  const int64_t users = dataset.num_users();
  const int64_t chunk = 512;
  auto popularity = torch::tensor(std::vector<double>(dataset.popularity.begin(), dataset.popularity.end()));
  RankingMetrics metrics(options.ks);
  for (int64_t begin = 0; begin < users; begin += chunk) {
    const int64_t end = std::min(users, begin + chunk);
    auto batch = MakeSplitBatch(dataset, split, begin, end, dataset.max_seq_len, options.count_repeated_targets);
    auto scores = popularity.to(torch::kFloat32).unsqueeze(0).expand({end - begin, -1});
    AccumulateRanks(TargetRanks(scores, batch.targets, batch.excluded), metrics);
  }
  return metrics;
}

}  // namespace iisan::train
