// The training loop, evaluation and the popularity baseline.
#include "core/train/trainer.h"

#include <chrono>

#include <glog/logging.h>
#include <torch/torch.h>

#include "core/data/progress.h"

namespace iisan::train {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

double LearningRateOf(models::OptimizerGroup group, const LearningRates& lr) {
  switch (group) {
    case models::OptimizerGroup::kRecsys: return lr.recsys;
    case models::OptimizerGroup::kText: return lr.text;
    case models::OptimizerGroup::kImage: return lr.image;
    case models::OptimizerGroup::kAdapterText: return lr.adapter_text;
    case models::OptimizerGroup::kAdapterImage: return lr.adapter_image;
  }
  return lr.recsys;
}

// Adam over IISAN's optimizer groups; parameter names decide the group as in the reference.
std::unique_ptr<torch::optim::Optimizer> MakeOptimizer(IisanRecommender& model, const LearningRates& lr) {
  std::map<models::OptimizerGroup, std::vector<torch::Tensor>> grouped;
  const std::string item_prefix = "item_encoder.";
  for (const auto& item : model->named_parameters()) {
    if (!item.value().requires_grad()) continue;
    const std::string& name = item.key();
    const auto group = name.rfind(item_prefix, 0) == 0
                           ? models::IisanParameterGroup(name.substr(item_prefix.size()))
                           : models::OptimizerGroup::kRecsys;
    grouped[group].push_back(item.value());
  }
  std::vector<torch::optim::OptimizerParamGroup> groups;
  for (auto& [group, params] : grouped) {
    groups.emplace_back(params, std::make_unique<torch::optim::AdamOptions>(LearningRateOf(group, lr)));
  }
  return std::make_unique<torch::optim::Adam>(groups, torch::optim::AdamOptions(lr.recsys));
}

struct SplitBatch {
  torch::Tensor histories;  // [U, L] left-padded
  std::vector<int32_t> targets;
  std::vector<std::vector<int32_t>> excluded;
};

SplitBatch MakeSplitBatch(const data::Dataset& dataset, Split split, int64_t begin, int64_t end, int64_t max_len) {
  SplitBatch batch;
  batch.histories = torch::zeros({end - begin, max_len}, torch::kInt64);
  auto hist = batch.histories.accessor<int64_t, 2>();
  for (int64_t u = begin; u < end; ++u) {
    const auto example = split == Split::kValid ? dataset.valid_example(u) : dataset.test_example(u);
    const int64_t n = static_cast<int64_t>(example.input.size());
    for (int64_t k = 0; k < n; ++k) hist[u - begin][max_len - n + k] = example.input[k];
    batch.targets.push_back(example.target);
    batch.excluded.emplace_back(example.excluded.begin(), example.excluded.end());
  }
  return batch;
}

}  // namespace

nlohmann::ordered_json EpochRecord::ToJson() const {
  nlohmann::ordered_json out;
  out["epoch"] = epoch;
  out["train_loss"] = train_loss;
  out["train_steps"] = train_steps;
  out["train_seconds"] = train_seconds;
  out["eval_seconds"] = eval_seconds;
  out["valid"] = valid.ToJson();
  if (test) out["test"] = test->ToJson();
  out["best"] = best;
  return out;
}

std::vector<int64_t> SeededPermutation(int64_t n, uint64_t seed) {
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  uint64_t state = seed;
  for (int64_t i = n - 1; i > 0; --i) {
    const int64_t j = static_cast<int64_t>(SplitMix64(state) % static_cast<uint64_t>(i + 1));
    std::swap(order[i], order[j]);
  }
  return order;
}

Trainer::Trainer(const data::Dataset& dataset, ItemStates states, IisanRecommender model, TrainOptions options)
    : dataset_(dataset), states_(states.To(options.device)), model_(std::move(model)), options_(std::move(options)) {
  model_->to(options_.device);
  std::vector<float> log_pop(dataset_.popularity.size());
  for (size_t i = 0; i < log_pop.size(); ++i) {
    // Items never seen in training have p = 0; clamp so that the correction stays finite.
    log_pop[i] = static_cast<float>(std::log(std::max(dataset_.popularity[i], 1e-12)));
  }
  log_popularity_ = torch::tensor(log_pop).to(options_.device);
  optimizer_ = MakeOptimizer(model_, options_.lr);
}

int64_t Trainer::trainable_parameters() const {
  int64_t total = 0;
  for (const auto& p : model_->parameters()) {
    if (p.requires_grad()) total += p.numel();
  }
  return total;
}

double Trainer::TrainEpoch(int epoch, int64_t& steps) {
  model_->train();
  const int64_t users = dataset_.num_users();
  const auto order = SeededPermutation(users, options_.seed + static_cast<uint64_t>(epoch));
  int64_t num_batches = (users + options_.batch_size - 1) / options_.batch_size;
  if (options_.max_steps_per_epoch > 0) num_batches = std::min(num_batches, options_.max_steps_per_epoch);
  const int64_t max_len = dataset_.max_seq_len;

  data::ProgressMeter progress("epoch " + std::to_string(epoch) + " train", num_batches * options_.batch_size, "users");
  auto loss_sum = torch::zeros({}, torch::TensorOptions().device(options_.device));
  std::vector<std::vector<int32_t>> sequences;
  for (int64_t b = 0; b < num_batches; ++b) {
    const int64_t begin = b * options_.batch_size;
    const int64_t end = std::min(users, begin + options_.batch_size);
    sequences.clear();
    for (int64_t i = begin; i < end; ++i) {
      const auto seq = dataset_.train_sequence(order[i]);
      sequences.emplace_back(seq.begin(), seq.end());
    }
    auto batch = MakeSequenceBatch(sequences, max_len);
    batch.item_ids = batch.item_ids.to(options_.device, /*non_blocking=*/true);
    batch.log_mask = batch.log_mask.to(options_.device, /*non_blocking=*/true);

    optimizer_->zero_grad();
    auto loss = model_->Loss(batch, states_, log_popularity_);
    loss.backward();
    optimizer_->step();
    loss_sum += loss.detach();
    progress.Advance(end - begin);
  }
  progress.Finish();
  steps = num_batches;
  return num_batches ? loss_sum.item<double>() / static_cast<double>(num_batches) : 0.0;
}

RankingMetrics Trainer::Evaluate(Split split) {
  model_->eval();
  torch::NoGradGuard no_grad;
  const auto table = model_->ItemTable(states_, options_.eval_batch_size);
  const int64_t users = dataset_.num_users();
  RankingMetrics metrics(options_.ks);
  for (int64_t begin = 0; begin < users; begin += options_.eval_batch_size) {
    const int64_t end = std::min(users, begin + options_.eval_batch_size);
    auto batch = MakeSplitBatch(dataset_, split, begin, end, dataset_.max_seq_len);
    auto user_vectors = model_->UserVectors(batch.histories.to(options_.device), table);
    auto scores = torch::matmul(user_vectors, table.t());
    AccumulateRanks(TargetRanks(scores, batch.targets, batch.excluded), metrics);
  }
  return metrics;
}

TrainResult Trainer::Fit(const std::function<void(const EpochRecord&)>& on_epoch) {
  TrainResult result;
  result.best_valid = RankingMetrics(options_.ks);
  result.test = RankingMetrics(options_.ks);
  double best_hr = -1.0;
  int bad_epochs = 0;
  double train_total = 0.0, eval_total = 0.0;
  for (int epoch = 1; epoch <= options_.epochs; ++epoch) {
    EpochRecord record;
    record.epoch = epoch;
    auto start = Clock::now();
    record.train_loss = TrainEpoch(epoch, record.train_steps);
    record.train_seconds = SecondsSince(start);

    start = Clock::now();
    record.valid = Evaluate(Split::kValid);
    const double hr = record.valid.hr(options_.selection_k);
    if (hr > best_hr) {
      best_hr = hr;
      bad_epochs = 0;
      record.best = true;
      record.test = Evaluate(Split::kTest);
      result.best_epoch = epoch;
      result.best_valid = record.valid;
      result.test = *record.test;
    } else {
      ++bad_epochs;
    }
    record.eval_seconds = SecondsSince(start);
    train_total += record.train_seconds;
    eval_total += record.eval_seconds;
    result.epochs_run = epoch;

    LOG(INFO) << "epoch " << epoch << ": loss " << record.train_loss << ", valid HR@"
              << options_.selection_k << " " << hr << ", NDCG@" << options_.selection_k << " "
              << record.valid.ndcg(options_.selection_k) << (record.best ? " (best)" : "") << ", "
              << record.train_seconds << " s train, " << record.eval_seconds << " s eval";
    on_epoch(record);
    if (bad_epochs > options_.patience) {
      LOG(INFO) << "early stop: no new best validation HR@" << options_.selection_k << " for "
                << bad_epochs << " epochs";
      break;
    }
  }
  result.mean_train_seconds = result.epochs_run ? train_total / result.epochs_run : 0.0;
  result.mean_eval_seconds = result.epochs_run ? eval_total / result.epochs_run : 0.0;
  return result;
}

RankingMetrics EvaluatePopularity(const data::Dataset& dataset, Split split, const std::vector<int>& ks) {
  const int64_t users = dataset.num_users();
  const int64_t chunk = 512;
  auto popularity = torch::tensor(std::vector<double>(dataset.popularity.begin(), dataset.popularity.end()));
  RankingMetrics metrics(ks);
  for (int64_t begin = 0; begin < users; begin += chunk) {
    const int64_t end = std::min(users, begin + chunk);
    auto batch = MakeSplitBatch(dataset, split, begin, end, dataset.max_seq_len);
    auto scores = popularity.to(torch::kFloat32).unsqueeze(0).expand({end - begin, -1});
    AccumulateRanks(TargetRanks(scores, batch.targets, batch.excluded), metrics);
  }
  return metrics;
}

}  // namespace iisan::train
