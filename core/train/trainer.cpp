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

// Adam over the reference's optimizer groups; parameter names decide the group.
std::unique_ptr<FlatAdam> MakeOptimizer(Recommender& model, const LearningRates& lr) {
  std::map<models::OptimizerGroup, std::vector<torch::Tensor>> grouped;
  for (const auto& item : model->named_parameters()) {
    if (!item.value().requires_grad()) continue;
    grouped[model->GroupOf(item.key())].push_back(item.value());
  }
  std::vector<FlatAdam::Group> groups;
  for (auto& [group, params] : grouped) groups.push_back({params, LearningRateOf(group, lr)});
  return std::make_unique<FlatAdam>(std::move(groups));
}

// Pads a batch with all-zero rows (no items, no targets) up to `rows` users.
SequenceBatch PadBatch(const SequenceBatch& batch, int64_t rows) {
  const int64_t have = batch.item_ids.size(0);
  if (have == rows) return batch;
  SequenceBatch padded{torch::zeros({rows, batch.item_ids.size(1)}, batch.item_ids.options()),
                       torch::zeros({rows, batch.log_mask.size(1)}, batch.log_mask.options())};
  padded.item_ids.narrow(0, 0, have).copy_(batch.item_ids);
  padded.log_mask.narrow(0, 0, have).copy_(batch.log_mask);
  return padded;
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
  out["full_epoch_steps"] = full_epoch_steps;
  out["train_seconds"] = train_seconds;
  out["steady_seconds_per_step"] = steady_seconds_per_step;
  out["eval_seconds"] = eval_seconds;
  out["valid_seconds"] = valid_seconds;
  out["gpu_utilization"] = gpu_utilization ? nlohmann::ordered_json(*gpu_utilization) : nlohmann::ordered_json();
  out["allreduce_bytes_per_step"] = allreduce_bytes_per_step;
  out["allreduce_ms_per_step"] = allreduce_ms_per_step;
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

nlohmann::ordered_json TrainResult::EfficiencyJson() const {
  nlohmann::ordered_json out;
  out["train_seconds_per_epoch"] = train_seconds_per_epoch;
  out["train_epoch_extrapolated"] = train_epoch_extrapolated;
  out["train_steps_per_epoch"] = full_epoch_steps;
  out["train_steps_measured"] = steps_measured;
  out["eval_seconds_per_epoch"] = valid_seconds_per_epoch;
  out["peak_memory_bytes"] = peak_memory.bytes;
  out["peak_memory_gib"] = static_cast<double>(peak_memory.bytes) / (1024.0 * 1024.0 * 1024.0);
  out["peak_memory_kind"] = peak_memory.kind;
  out["gpu_utilization"] = gpu_utilization ? nlohmann::ordered_json(*gpu_utilization) : nlohmann::ordered_json();
  return out;
}

Trainer::Trainer(const data::Dataset& dataset, Recommender model, TrainOptions options, DataParallel* parallel)
    : dataset_(dataset), model_(std::move(model)), options_(std::move(options)), parallel_(parallel) {
  if (parallel_ && parallel_->world_size() <= 1) parallel_ = nullptr;
  progress_.result.best_valid = RankingMetrics(options_.ks);
  progress_.result.test = RankingMetrics(options_.ks);
  if (model_->device() != options_.device) {
    throw std::logic_error("Trainer: the model was prepared for " + model_->device().str() + " but training runs on " +
                           options_.device.str());
  }
  std::vector<float> log_pop(dataset_.popularity.size());
  for (size_t i = 0; i < log_pop.size(); ++i) {
    // Items never seen in training have p = 0; clamp so that the correction stays finite.
    log_pop[i] = static_cast<float>(std::log(std::max(dataset_.popularity[i], 1e-12)));
  }
  log_popularity_ = torch::tensor(log_pop).to(options_.device);
  optimizer_ = MakeOptimizer(model_, options_.lr);
  loss_sum_ = torch::zeros({}, torch::TensorOptions().device(options_.device));
  use_graph_ = !parallel_ && options_.cuda_graph && options_.device.is_cuda() && CudaGraphStep::Supported();
  if (use_graph_) {
    const auto on_device = torch::TensorOptions().device(options_.device);
    static_ids_ = torch::zeros({options_.batch_size, dataset_.max_seq_len + 1}, on_device.dtype(torch::kInt64));
    static_mask_ = torch::zeros({options_.batch_size, dataset_.max_seq_len}, on_device.dtype(torch::kFloat32));
    if (UsesLiveBackbones(model_->config().method)) {
      static_inverse_ = torch::zeros({static_ids_.numel()}, on_device.dtype(torch::kInt64));
      LOG(INFO) << "training steps run as CUDA graphs, one per count of distinct items (a multiple of "
                << kLiveGraphBucket << "), each captured after warm-up steps";
    } else {
      LOG(INFO) << "training steps run as a CUDA graph (captured after 3 warm-up steps)";
    }
  }
}

int64_t Trainer::trainable_parameters() const {
  int64_t total = 0;
  for (const auto& p : model_->parameters()) {
    if (p.requires_grad()) total += p.numel();
  }
  return total;
}

void Trainer::TrainEpoch(EpochRecord& record) {
  model_->train();
  const int64_t users = dataset_.num_users();
  const auto order = SeededPermutation(users, options_.seed + static_cast<uint64_t>(record.epoch));
  record.full_epoch_steps = (users + options_.batch_size - 1) / options_.batch_size;
  int64_t num_batches = record.full_epoch_steps;
  if (options_.max_steps_per_epoch > 0) num_batches = std::min(num_batches, options_.max_steps_per_epoch);
  const int64_t max_len = dataset_.max_seq_len;
  // The first steps carry one-time costs (allocator growth, kernel selection); the steady rate
  // is timed after them, with one device synchronisation at each end of that window.
  const int64_t warmup = std::min<int64_t>(5, num_batches / 4);

  GpuUtilizationSampler utilization(options_.device);
  utilization.Start();
  const auto start = Clock::now();
  Clock::time_point steady_start = start;
  data::ProgressMeter progress("epoch " + std::to_string(record.epoch) + " train", num_batches * options_.batch_size,
                               "users");
  loss_sum_.zero_();
  int64_t comm_bytes = 0;
  double comm_seconds = 0.0;
  double phase_forward = 0, phase_backward = 0, phase_optimizer = 0;
  int64_t profiled = 0;
  std::vector<std::vector<int32_t>> sequences;
  for (int64_t b = 0; b < num_batches; ++b) {
    if (b == warmup) {
      SynchronizeDevice(options_.device);
      steady_start = Clock::now();
    }
    const int64_t begin = b * options_.batch_size;
    const int64_t end = std::min(users, begin + options_.batch_size);
    if (parallel_) {
      const auto stats = ParallelStep(std::vector<int64_t>(order.begin() + begin, order.begin() + end));
      comm_bytes += stats.bytes;
      comm_seconds += stats.seconds;
      progress.Advance(end - begin);
      continue;
    }
    sequences.clear();
    for (int64_t i = begin; i < end; ++i) {
      const auto seq = dataset_.train_sequence(order[i]);
      sequences.emplace_back(seq.begin(), seq.end());
    }
    const auto batch = MakeSequenceBatch(sequences, max_len);
    if (use_graph_) {
      GraphStep(batch);
    } else {
      // Warm-up steps after the first are timed phase by phase (with synchronisation), which
      // leaves the steady-state measurement untouched.
      const bool profile = b >= 1 && b < warmup;
      auto mark = [&](double& total, Clock::time_point& since) {
        if (!profile) return;
        SynchronizeDevice(options_.device);
        const auto now = Clock::now();
        total += std::chrono::duration<double>(now - since).count();
        since = now;
      };
      auto since = Clock::now();
      optimizer_->ZeroGrad();
      auto loss = model_->Loss(batch, log_popularity_);
      mark(phase_forward, since);
      loss.backward();
      mark(phase_backward, since);
      optimizer_->Step();
      loss_sum_.add_(loss.detach());
      mark(phase_optimizer, since);
      profiled += profile;
    }
    progress.Advance(end - begin);
  }
  SynchronizeDevice(options_.device);
  const auto stop = Clock::now();
  utilization.Stop();
  progress.Finish();
  record.train_steps = num_batches;
  record.train_seconds = std::chrono::duration<double>(stop - start).count();
  const int64_t steady_steps = num_batches - warmup;
  record.steady_seconds_per_step = steady_steps > 0
      ? std::chrono::duration<double>(stop - steady_start).count() / static_cast<double>(steady_steps) : 0.0;
  record.gpu_utilization = utilization.Mean();
  if (profiled > 0) {
    LOG(INFO) << "step phases (mean of " << profiled << " synchronised warm-up steps): forward with batch gather "
              << 1e3 * phase_forward / profiled << " ms, backward " << 1e3 * phase_backward / profiled
              << " ms, optimizer " << 1e3 * phase_optimizer / profiled << " ms";
  }
  double loss_total = loss_sum_.item<double>();
  if (parallel_) {
    loss_total = parallel_->Sum(loss_total);  // each rank holds its share of every step's loss
    record.allreduce_bytes_per_step = num_batches ? comm_bytes / num_batches : 0;
    record.allreduce_ms_per_step = num_batches ? 1e3 * comm_seconds / static_cast<double>(num_batches) : 0.0;
  }
  record.train_loss = num_batches ? loss_total / static_cast<double>(num_batches) : 0.0;
}

CommStats Trainer::ParallelStep(const std::vector<int64_t>& users) {
  const int world = parallel_->world_size();
  const int rank = parallel_->rank();
  const int64_t rows = (static_cast<int64_t>(users.size()) + world - 1) / world;
  // Deal the users to the ranks in snake order of their sequence lengths: equal counts (within
  // one) and nearly equal interactions. Every rank computes the same deal.
  std::vector<int64_t> by_length = users;
  std::stable_sort(by_length.begin(), by_length.end(), [&](int64_t a, int64_t b) {
    return dataset_.train_sequence(a).size() > dataset_.train_sequence(b).size();
  });
  std::vector<std::vector<std::vector<int32_t>>> per_rank(world);
  for (size_t i = 0; i < by_length.size(); ++i) {
    const int64_t round = static_cast<int64_t>(i) / world, position = static_cast<int64_t>(i) % world;
    const int64_t target = round % 2 == 0 ? position : world - 1 - position;
    const auto seq = dataset_.train_sequence(by_length[i]);
    per_rank[target].emplace_back(seq.begin(), seq.end());
  }
  std::vector<torch::Tensor> ids, masks;
  for (const auto& sequences : per_rank) {
    const auto padded = PadBatch(MakeSequenceBatch(sequences, dataset_.max_seq_len), rows);
    ids.push_back(padded.item_ids);
    masks.push_back(padded.log_mask);
  }
  const SequenceBatch global{torch::cat(ids, 0), torch::cat(masks, 0)};

  optimizer_->ZeroGrad();
  auto loss = model_->LossShard(global, rank * rows, rows, log_popularity_,
                                [this](const torch::Tensor& local) { return parallel_->AllGather(local); });
  parallel_->BeforeBackward();
  loss.backward();
  const auto stats = parallel_->AfterBackward();
  optimizer_->Step();
  loss_sum_.add_(loss.detach());
  ++parallel_steps_;
  if (options_.check_sync_every > 0 && parallel_steps_ % options_.check_sync_every == 0) {
    std::vector<torch::Tensor> tensors;
    std::vector<std::string> names;
    for (const auto& item : model_->named_parameters()) {
      if (!item.value().requires_grad()) continue;
      tensors.push_back(item.value());
      names.push_back(item.key());
    }
    parallel_->CheckInSync(tensors, names, parallel_steps_);
  }
  return stats;
}

void Trainer::GraphStep(const SequenceBatch& batch) {
  const auto padded = PadBatch(batch, options_.batch_size);
  // Inputs travel through pinned memory straight into the graph's buffers: a copy from
  // pageable memory would wait for the GPU.
  static_ids_.copy_(padded.item_ids.pin_memory(), /*non_blocking=*/true);
  static_mask_.copy_(padded.log_mask.pin_memory(), /*non_blocking=*/true);
  int64_t key = 0;
  if (UsesLiveBackbones(model_->config().method)) {
    const auto distinct = FindDistinctItems(padded.item_ids, kLiveGraphBucket);
    const int64_t rows = distinct.ids.size(0);
    const auto staged = model_->StageItems(distinct.ids);
    if (!static_items_.ids.defined()) {
      const int64_t capacity = static_ids_.numel();
      static_items_.ids = torch::zeros({capacity}, staged.ids.options());
      if (staged.pixels.defined()) {
        auto sizes = staged.pixels.sizes().vec();
        sizes[0] = capacity;
        static_items_.pixels = torch::zeros(sizes, staged.pixels.options());
      }
    }
    static_inverse_.copy_(distinct.inverse.pin_memory(), /*non_blocking=*/true);
    static_items_.ids.narrow(0, 0, rows).copy_(staged.ids, /*non_blocking=*/true);
    if (staged.pixels.defined()) static_items_.pixels.narrow(0, 0, rows).copy_(staged.pixels, /*non_blocking=*/true);
    key = rows;
  }
  // key > 0: the live methods' step over that many (padded) distinct items; 0: cached IISAN.
  const auto step = [this, key] {
    optimizer_->ZeroGrad();
    torch::Tensor loss;
    if (key > 0) {
      const StagedItems items{static_items_.ids.narrow(0, 0, key),
                              static_items_.pixels.defined() ? static_items_.pixels.narrow(0, 0, key) : torch::Tensor()};
      loss = model_->LossStaged(items, static_inverse_, static_ids_, static_mask_, log_popularity_);
    } else {
      loss = model_->LossOnDevice(static_ids_, static_mask_, log_popularity_);
    }
    loss.backward();
    optimizer_->Step();
    loss_sum_.add_(loss.detach());
  };
  auto& slot = graphs_[key];
  if (!slot.graph) slot.graph = std::make_unique<CudaGraphStep>(options_.device);
  // The first graph waits for three eager steps (allocator growth, library handles, kernel
  // selection); a later shape needs one on its own stream.
  if (slot.warmups < (pool_owner_ ? 1 : 3)) {
    slot.graph->Warmup(step);
    ++slot.warmups;
    return;
  }
  if (!slot.graph->captured()) {
    slot.graph->Capture(step, pool_owner_);
    if (!pool_owner_) pool_owner_ = slot.graph.get();
    if (key > 0) LOG(INFO) << "captured the training step for " << key << " distinct items (" << graphs_.size() << " graphs)";
  }
  slot.graph->Replay();
}

RankingMetrics Trainer::Evaluate(Split split) {
  model_->eval();
  torch::NoGradGuard no_grad;
  const auto table = model_->ItemTable(options_.eval_batch_size);
  const int64_t users = dataset_.num_users();
  // Data-parallel: each rank ranks one contiguous range of users; the sums are reduced.
  const int64_t world = parallel_ ? parallel_->world_size() : 1, rank = parallel_ ? parallel_->rank() : 0;
  const int64_t first = users * rank / world, last = users * (rank + 1) / world;
  RankingMetrics metrics(options_.ks);
  for (int64_t begin = first; begin < last; begin += options_.eval_batch_size) {
    const int64_t end = std::min(last, begin + options_.eval_batch_size);
    auto batch = MakeSplitBatch(dataset_, split, begin, end, dataset_.max_seq_len);
    auto user_vectors = model_->UserVectors(batch.histories.to(options_.device), table);
    auto scores = torch::matmul(user_vectors, table.t());
    AccumulateRanks(TargetRanks(scores, batch.targets, batch.excluded), metrics);
  }
  return parallel_ ? parallel_->ReduceMetrics(metrics, users) : metrics;
}

namespace {

nlohmann::ordered_json MetricsState(const RankingMetrics& m) {
  return {{"ks", m.ks}, {"hit_sum", m.hit_sum}, {"ndcg_sum", m.ndcg_sum}, {"users", m.users}};
}

RankingMetrics MetricsFromState(const nlohmann::ordered_json& j) {
  RankingMetrics m(j.at("ks").get<std::vector<int>>());
  m.hit_sum = j.at("hit_sum").get<std::vector<double>>();
  m.ndcg_sum = j.at("ndcg_sum").get<std::vector<double>>();
  m.users = j.at("users").get<int64_t>();
  return m;
}

constexpr int kCheckpointVersion = 1;

}  // namespace

TrainCheckpoint Trainer::Checkpoint() const {
  const auto& p = progress_;
  TrainCheckpoint out;
  out.state = {{"version", kCheckpointVersion},
               {"epochs_done", p.result.epochs_run},
               {"best_hr", p.best_hr},
               {"bad_epochs", p.bad_epochs},
               {"best_epoch", p.result.best_epoch},
               {"best_valid", MetricsState(p.result.best_valid)},
               {"test", MetricsState(p.result.test)},
               {"full_epoch_steps", p.result.full_epoch_steps},
               {"steps_measured", p.result.steps_measured},
               {"train_total", p.train_total},
               {"later_train_total", p.later_train_total},
               {"eval_total", p.eval_total},
               {"valid_total", p.valid_total},
               {"steady_total", p.steady_total},
               {"utilization_total", p.utilization_total},
               {"utilization_epochs", p.utilization_epochs},
               {"truncated", p.truncated},
               {"seed", options_.seed},
               {"batch_size", options_.batch_size}};
  for (auto& [name, tensor] : optimizer_->State()) out.tensors.emplace_back(name, tensor.detach().to(torch::kCPU));
  // The generators dropout draws from; the epochs' user order is a function of seed and epoch.
  out.tensors.emplace_back("rng.cpu", GeneratorState(torch::kCPU));
  if (options_.device.is_cuda()) out.tensors.emplace_back("rng.cuda", GeneratorState(options_.device));
  return out;
}

void Trainer::Resume(const TrainCheckpoint& checkpoint) {
  const auto& j = checkpoint.state;
  if (j.value("version", 0) != kCheckpointVersion) {
    throw std::runtime_error("checkpoint version " + j.value("version", nlohmann::ordered_json(0)).dump() + " is not " +
                             std::to_string(kCheckpointVersion) + "; it was written by another iisan");
  }
  if (j.at("seed").get<uint64_t>() != options_.seed || j.at("batch_size").get<int64_t>() != options_.batch_size) {
    throw std::runtime_error("the checkpoint was trained with seed " + j.at("seed").dump() + " and batch size " +
                             j.at("batch_size").dump() + ", this run has seed " + std::to_string(options_.seed) +
                             " and batch size " + std::to_string(options_.batch_size) +
                             ": an exact resume needs the same; drop the overrides that change them");
  }
  auto lookup = [&](const std::string& name) {
    for (const auto& [key, tensor] : checkpoint.tensors) {
      if (key == name) return tensor;
    }
    return torch::Tensor();
  };
  optimizer_->LoadState([&](const std::string& name) { return lookup(name); });
  auto& p = progress_;
  p.best_hr = j.at("best_hr").get<double>();
  p.bad_epochs = j.at("bad_epochs").get<int>();
  p.result.best_epoch = j.at("best_epoch").get<int>();
  p.result.best_valid = MetricsFromState(j.at("best_valid"));
  p.result.test = MetricsFromState(j.at("test"));
  p.result.epochs_run = j.at("epochs_done").get<int>();
  p.result.full_epoch_steps = j.at("full_epoch_steps").get<int64_t>();
  p.result.steps_measured = j.at("steps_measured").get<int64_t>();
  p.train_total = j.at("train_total").get<double>();
  p.later_train_total = j.at("later_train_total").get<double>();
  p.eval_total = j.at("eval_total").get<double>();
  p.valid_total = j.at("valid_total").get<double>();
  p.steady_total = j.at("steady_total").get<double>();
  p.utilization_total = j.at("utilization_total").get<double>();
  p.utilization_epochs = j.at("utilization_epochs").get<int>();
  p.truncated = j.at("truncated").get<bool>();
  const auto cpu = lookup("rng.cpu");
  if (!cpu.defined()) throw std::runtime_error("checkpoint has no 'rng.cpu' generator state");
  SetGeneratorState(torch::kCPU, cpu);
  if (options_.device.is_cuda()) {
    const auto cuda = lookup("rng.cuda");
    if (!cuda.defined()) throw std::runtime_error("checkpoint has no 'rng.cuda' generator state (saved on a CPU run?)");
    SetGeneratorState(options_.device, cuda);
  }
  LOG(INFO) << "resumed after epoch " << p.result.epochs_run << " (best epoch " << p.result.best_epoch << ", "
            << p.bad_epochs << " epochs without a new best)";
}

TrainResult Trainer::Fit(const std::function<void(const EpochRecord&)>& on_epoch) {
  auto& p = progress_;
  auto& result = p.result;
  ResetPeakMemory(options_.device);
  if (parallel_) {
    std::vector<torch::Tensor> trainable;
    for (const auto& param : model_->parameters()) {
      if (param.requires_grad()) trainable.push_back(param);
    }
    torch::NoGradGuard no_grad;
    parallel_->Broadcast(trainable);  // every rank starts from rank 0's initialisation
  }
  const bool stopped_before = result.epochs_run > 0 && p.bad_epochs > options_.patience;
  for (int epoch = result.epochs_run + 1; epoch <= options_.epochs && !stopped_before; ++epoch) {
    EpochRecord record;
    record.epoch = epoch;
    TrainEpoch(record);

    auto start = Clock::now();
    record.valid = Evaluate(Split::kValid);
    record.valid_seconds = SecondsSince(start);
    const double hr = record.valid.hr(options_.selection_k);
    if (hr > p.best_hr) {
      p.best_hr = hr;
      p.bad_epochs = 0;
      record.best = true;
      record.test = Evaluate(Split::kTest);
      result.best_epoch = epoch;
      result.best_valid = record.valid;
      result.test = *record.test;
    } else {
      ++p.bad_epochs;
    }
    record.eval_seconds = SecondsSince(start);
    p.train_total += record.train_seconds;
    if (epoch > 1) p.later_train_total += record.train_seconds;
    p.eval_total += record.eval_seconds;
    p.valid_total += record.valid_seconds;
    p.steady_total += record.steady_seconds_per_step;
    if (record.gpu_utilization) p.utilization_total += *record.gpu_utilization, ++p.utilization_epochs;
    p.truncated |= record.train_steps < record.full_epoch_steps;
    result.epochs_run = epoch;
    result.full_epoch_steps = record.full_epoch_steps;
    result.steps_measured += record.train_steps;

    LOG(INFO) << "epoch " << epoch << ": loss " << record.train_loss << ", valid HR@"
              << options_.selection_k << " " << hr << ", NDCG@" << options_.selection_k << " "
              << record.valid.ndcg(options_.selection_k) << (record.best ? " (best)" : "") << ", "
              << record.train_seconds << " s train (" << record.train_steps << " steps, "
              << record.steady_seconds_per_step << " s/step steady), " << record.eval_seconds << " s eval";
    on_epoch(record);
    if (p.bad_epochs > options_.patience) {
      LOG(INFO) << "early stop: no new best validation HR@" << options_.selection_k << " for "
                << p.bad_epochs << " epochs";
      break;
    }
  }
  TrainResult out = result;
  const double epochs = std::max(1, out.epochs_run);
  out.mean_train_seconds = p.train_total / epochs;
  out.mean_eval_seconds = p.eval_total / epochs;
  out.valid_seconds_per_epoch = p.valid_total / epochs;
  out.train_epoch_extrapolated = p.truncated;
  if (p.truncated) {
    out.train_seconds_per_epoch = p.steady_total / epochs * static_cast<double>(out.full_epoch_steps);
  } else {
    out.train_seconds_per_epoch = out.epochs_run > 1 ? p.later_train_total / (epochs - 1) : p.train_total;
  }
  if (p.utilization_epochs > 0) out.gpu_utilization = p.utilization_total / p.utilization_epochs;
  out.peak_memory = MeasurePeakMemory(options_.device);
  return out;
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
