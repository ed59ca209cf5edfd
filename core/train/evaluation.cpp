// Evaluation passes: the split's users gathered once into an EvaluationSet on the device, then
// scored in memory-bounded chunks against the whole item table, ranks and metric sums kept on
// the device until the pass ends.
#include "core/train/evaluation.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include <torch/torch.h>

namespace iisan::train {
namespace {

// Float32 values per history position and embedding dimension that the user encoder keeps alive
// at once without autograd: queries, keys, values, the 4x-wide feed-forward layer and its
// activation, the residual stream (about 12; rounded up).
constexpr int64_t kEncoderValuesPerDimension = 16;

// Device bytes per user of a chunk of `model`'s evaluation: the user encoder's activations
// (per position, kEncoderValuesPerDimension per embedding dimension and two attention rows per
// head) and the ranking's kRankBytesPerScore per item.
int64_t ModelBytesPerUser(const RecommenderConfig& config, int64_t history_len, int64_t columns) {
  const int64_t encoder_values =
      history_len * (kEncoderValuesPerDimension * config.user.embedding_dim + 2 * config.user.num_heads * history_len);
  return static_cast<int64_t>(sizeof(float)) * encoder_values + kRankBytesPerScore * columns;
}

// Ranks every user of `set`, chunk by chunk (EvaluationChunkUsers), from score(begin, end): the
// float32 scores [end - begin, N + 1] of users [begin, end) on the set's device, handed over.
// The ranks are summed there; the one read of the device is the result's.
template <typename Score>
RankingMetrics RankInChunks(const EvaluationSet& set, const EvalOptions& options, int64_t bytes_per_user,
                            const Score& score) {
  const int64_t users = set.size();
  const int64_t chunk = EvaluationChunkUsers(options, bytes_per_user);
  RankAccumulator accumulator(options.ks, set.histories.device());
  for (int64_t begin = 0; begin < users; begin += chunk) {
    const int64_t end = std::min(users, begin + chunk);
    accumulator.Add(RankTargets(score(begin, end), set.targets, begin));
  }
  return accumulator.Result();
}

void CheckSetFits(const EvaluationSet& set, const EvalOptions& options, const torch::Device& device) {
  if (set.count_repeated_targets != options.count_repeated_targets) {
    throw std::invalid_argument(std::string("EvaluateModel: the evaluation set was built with "
                                            "count_repeated_targets = ") +
                                (set.count_repeated_targets ? "true" : "false") + ", the options ask for " +
                                (options.count_repeated_targets ? "true" : "false"));
  }
  if (!SameDevice(set.histories.device(), device)) {
    throw std::invalid_argument("EvaluateModel: the evaluation set is on " + set.histories.device().str() +
                                ", the model on " + device.str());
  }
}

}  // namespace

bool SameDevice(const torch::Device& a, const torch::Device& b) {
  if (a.type() != b.type()) return false;
  return a.index() == b.index() || !a.has_index() || !b.has_index();
}

int64_t EvaluationChunkUsers(const EvalOptions& options, int64_t bytes_per_user) {
  if (options.batch_size < 1 || options.memory_mb < 1 || options.memory_mb > kMaxEvalMemoryMb) {
    throw std::invalid_argument("EvalOptions: batch_size must be at least 1 and memory_mb in [1, " +
                                std::to_string(kMaxEvalMemoryMb) + "], got " + std::to_string(options.batch_size) +
                                " and " + std::to_string(options.memory_mb));
  }
  const int64_t fit = (options.memory_mb << 20) / std::max<int64_t>(bytes_per_user, 1);
  return std::clamp<int64_t>(fit, 1, options.batch_size);
}

int64_t CachedItemBytes(const RecommenderConfig& config) {
  const int64_t modalities = config.modality == models::Modality::kTextImage ? 2 : 1;
  return 2 * config.side.num_blocks * config.side.hidden_size * modalities * static_cast<int64_t>(sizeof(float));
}

int64_t ItemTableChunk(const RecommenderConfig& config, int64_t memory_mb) {
  if (UsesLiveBackbones(config.method)) return kLiveItemTableChunk;
  // The users' chunking with the table's cap: one budget check, one rounding.
  EvalOptions items;
  items.batch_size = kCachedItemTableChunk;
  items.memory_mb = memory_mb;
  return EvaluationChunkUsers(items, CachedItemBytes(config));
}

EvaluationSet MakeEvaluationSet(const data::Dataset& dataset, Split split, std::pair<int64_t, int64_t> users,
                                bool count_repeated_targets, const torch::Device& device) {
  const auto [first, last] = users;
  if (first < 0 || first > last || last > dataset.num_users()) {
    throw std::invalid_argument("MakeEvaluationSet: users [" + std::to_string(first) + ", " + std::to_string(last) +
                                ") are not a range of the dataset's " + std::to_string(dataset.num_users()));
  }
  const int64_t max_len = dataset.max_seq_len;
  auto histories = torch::zeros({last - first, max_len}, torch::kInt64);
  auto history = histories.accessor<int64_t, 2>();
  std::vector<int32_t> targets;
  std::vector<std::vector<int32_t>> excluded;
  targets.reserve(last - first);
  excluded.reserve(last - first);
  for (int64_t u = first; u < last; ++u) {
    const auto example = split == Split::kValid ? dataset.valid_example(u) : dataset.test_example(u);
    const int64_t n = static_cast<int64_t>(example.input.size());
    for (int64_t k = 0; k < n; ++k) history[u - first][max_len - n + k] = example.input[k];
    targets.push_back(example.target);
    auto& left_out = excluded.emplace_back(example.excluded.begin(), example.excluded.end());
    if (count_repeated_targets) std::erase(left_out, example.target);
  }
  EvaluationSet set;
  set.first_user = first;
  set.dataset_users = dataset.num_users();
  set.count_repeated_targets = count_repeated_targets;
  set.histories = histories.to(device);
  set.targets = MakeRankingTargets(targets, excluded, dataset.num_items() + 1).To(device);
  return set;
}

EvaluationSet MakeEvaluationSet(const data::Dataset& dataset, Split split, const EvalOptions& options,
                                const torch::Device& device, DataParallel* parallel) {
  const int64_t users = dataset.num_users();
  const auto range = parallel ? parallel->EvaluationUsers(users) : std::pair<int64_t, int64_t>(0, users);
  return MakeEvaluationSet(dataset, split, range, options.count_repeated_targets, device);
}

RankingMetrics EvaluateModel(Recommender& model, const EvaluationSet& set, const EvalOptions& options,
                             DataParallel* parallel) {
  CheckSetFits(set, options, model->device());
  if (parallel) {
    const auto mine = parallel->EvaluationUsers(set.dataset_users);
    if (mine != std::pair<int64_t, int64_t>(set.first_user, set.first_user + set.size())) {
      throw std::logic_error("EvaluateModel: rank " + std::to_string(parallel->rank()) + " evaluates users [" +
                             std::to_string(mine.first) + ", " + std::to_string(mine.second) + "), its set holds [" +
                             std::to_string(set.first_user) + ", " + std::to_string(set.first_user + set.size()) +
                             ")");
    }
  }
  model->eval();
  torch::NoGradGuard no_grad;
  const auto table = model->ItemTable(ItemTableChunk(model->config(), options.memory_mb));
  if (table.size(0) != set.targets.columns) {
    throw std::invalid_argument("EvaluateModel: the model embeds " + std::to_string(table.size(0)) +
                                " item rows, the evaluation set ranks " + std::to_string(set.targets.columns));
  }
  const auto table_t = table.t();
  const int64_t bytes_per_user = ModelBytesPerUser(model->config(), set.histories.size(1), set.targets.columns);
  const auto metrics = RankInChunks(set, options, bytes_per_user, [&](int64_t begin, int64_t end) {
    return torch::matmul(model->UserVectors(set.histories.slice(0, begin, end), table), table_t);
  });
  return parallel ? parallel->ReduceMetrics(metrics, set.dataset_users) : metrics;
}

int64_t EvaluationChunks(const RecommenderConfig& config, const EvaluationSet& set, const EvalOptions& options) {
  const int64_t chunk =
      EvaluationChunkUsers(options, ModelBytesPerUser(config, set.histories.size(1), set.targets.columns));
  return (set.size() + chunk - 1) / chunk;
}

RankingMetrics EvaluateModel(Recommender& model, const data::Dataset& dataset, Split split, const EvalOptions& options,
                             DataParallel* parallel) {
  return EvaluateModel(model, MakeEvaluationSet(dataset, split, options, model->device(), parallel), options, parallel);
}

RankingMetrics EvaluatePopularity(const data::Dataset& dataset, Split split, const EvalOptions& options) {
  const auto set = MakeEvaluationSet(dataset, split, {0, dataset.num_users()}, options.count_repeated_targets,
                                     torch::kCPU);
  const auto popularity = torch::tensor(dataset.popularity, torch::kFloat64).to(torch::kFloat32).unsqueeze(0);
  const int64_t bytes_per_user = kRankBytesPerScore * set.targets.columns;
  return RankInChunks(set, options, bytes_per_user, [&](int64_t begin, int64_t end) {
    return popularity.expand({end - begin, -1}).clone();
  });
}

}  // namespace iisan::train
