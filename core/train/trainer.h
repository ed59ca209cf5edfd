// Training of every method: Adam with the reference's optimizer groups (IISAN.md §6), one pass
// over the users per epoch in a seeded order, validation HR@10 after every epoch, early
// stopping, and the test metrics taken at the best validation epoch. Also the popularity
// baseline, ranked the same way. Each epoch is measured for the efficiency comparison
// (IISAN.md §7.1): training seconds (evaluation excluded), steady-state seconds per step,
// validation seconds, GPU utilisation, and the run's peak device memory.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "core/data/dataset.h"
#include "core/train/ranking.h"
#include "core/train/cuda_graph.h"
#include "core/train/data_parallel.h"
#include "core/train/device_stats.h"
#include "core/train/flat_adam.h"
#include "core/train/method.h"
#include "core/train/recommender.h"

namespace iisan::train {

// Live-backbone methods under a CUDA graph: distinct items per batch are padded to a multiple
// of this, so that a few graphs cover every batch (about 10% padding at the reference's sizes).
inline constexpr int64_t kLiveGraphBucket = 32;

struct TrainOptions {
  int64_t batch_size = 64;
  int epochs = 100;
  int patience = 10;               // stop after `patience` + 1 epochs without a new best
  int64_t max_steps_per_epoch = 0;  // 0 = the whole epoch; otherwise the epoch time is extrapolated
  int64_t eval_batch_size = 256;
  std::vector<int> ks = {5, 10, 20};
  int selection_k = 10;  // model selection on validation HR@selection_k
  LearningRates lr;
  uint64_t seed = 12345;
  torch::Device device = torch::kCPU;
  // On CUDA, one process: capture the training step as a CUDA graph after warm-up steps and
  // replay it (batches are padded to batch_size so that shapes never change). Live-backbone
  // methods pad each batch's distinct items to a multiple of kLiveGraphBucket and keep one
  // graph per count, all sharing one memory pool.
  bool cuda_graph = true;
  // Data-parallel runs: every this many steps, check that all ranks hold the same trainable
  // parameters (0 = never; a debugging aid that costs one all-gather per check).
  int64_t check_sync_every = 0;
};

enum class Split { kValid, kTest };

struct EpochRecord {
  int epoch = 0;
  double train_loss = 0.0;
  int64_t train_steps = 0;
  int64_t full_epoch_steps = 0;     // steps of an untruncated epoch
  double train_seconds = 0.0;       // the steps actually run, evaluation excluded
  double steady_seconds_per_step = 0.0;  // after the first steps (allocator, kernel selection)
  double eval_seconds = 0.0;        // validation, plus test at a new best
  double valid_seconds = 0.0;       // validation alone
  std::optional<double> gpu_utilization;  // mean while training, fraction
  int64_t allreduce_bytes_per_step = 0;   // data-parallel runs: gradient bytes this rank sent
  double allreduce_ms_per_step = 0.0;     // time waiting for the gradient all-reduce
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
  double mean_train_seconds = 0.0;  // over the epochs run, as measured
  double mean_eval_seconds = 0.0;
  // One training epoch: the measured mean over epochs after the first (which carries one-time
  // warm-up), or, when epochs were truncated by max_steps_per_epoch, the steady-state seconds
  // per step times the steps of a full epoch.
  double train_seconds_per_epoch = 0.0;
  bool train_epoch_extrapolated = false;
  int64_t full_epoch_steps = 0;
  int64_t steps_measured = 0;
  double valid_seconds_per_epoch = 0.0;
  std::optional<double> gpu_utilization;
  PeakMemory peak_memory;
  nlohmann::ordered_json EfficiencyJson() const;
};

// What Fit needs to go on after a completed epoch exactly as an uninterrupted run would: the
// progress (epochs done, best metric, epochs without a new best, timing totals) as JSON, and
// the optimizer's moments and step and the random generators' states as tensors. The model's
// trainable weights are saved beside it by the caller.
struct TrainCheckpoint {
  nlohmann::ordered_json state;
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
};

class Trainer {
 public:
  // The model must be Prepare()d for options.device. With `parallel` (which must outlive the
  // trainer) this process is one rank of a data-parallel job; see data_parallel.h.
  Trainer(const data::Dataset& dataset, Recommender model, TrainOptions options, DataParallel* parallel = nullptr);

  // Trains from the epoch after the last completed one (the first, unless Resume was called)
  // up to options.epochs or early stopping; on_epoch runs after each epoch's evaluation, where
  // Checkpoint() describes the state after that epoch.
  TrainResult Fit(const std::function<void(const EpochRecord&)>& on_epoch);
  TrainCheckpoint Checkpoint() const;
  int epochs_done() const { return progress_.result.epochs_run; }
  // Restores a Checkpoint() of a run with the same config (its model weights already loaded).
  // std::runtime_error naming what differs when the seed or batch size do, or state is missing.
  void Resume(const TrainCheckpoint& checkpoint);
  RankingMetrics Evaluate(Split split);
  int64_t trainable_parameters() const;

 private:
  void TrainEpoch(EpochRecord& record);

  const data::Dataset& dataset_;
  Recommender model_;
  TrainOptions options_;
  torch::Tensor log_popularity_;
  void GraphStep(const SequenceBatch& batch);
  // One data-parallel step over the global batch users[0..n); returns the comm stats.
  CommStats ParallelStep(const std::vector<int64_t>& users);

  struct Progress {
    double best_hr = -1.0;
    int bad_epochs = 0;
    double train_total = 0.0, later_train_total = 0.0, eval_total = 0.0, valid_total = 0.0;
    double steady_total = 0.0, utilization_total = 0.0;
    int utilization_epochs = 0;
    bool truncated = false;
    TrainResult result;  // its epochs_run: the epochs completed
  } progress_;

  DataParallel* parallel_ = nullptr;
  int64_t parallel_steps_ = 0;
  std::unique_ptr<FlatAdam> optimizer_;
  bool use_graph_ = false;
  struct GraphSlot {
    std::unique_ptr<CudaGraphStep> graph;
    int warmups = 0;
  };
  std::map<int64_t, GraphSlot> graphs_;  // by distinct items per batch (one entry for cached IISAN)
  const CudaGraphStep* pool_owner_ = nullptr;  // the first captured graph; the others share its pool
  torch::Tensor static_ids_, static_mask_, static_inverse_, loss_sum_;
  StagedItems static_items_;  // live methods: room for every position of a batch
};

// The popularity baseline: every user gets items ranked by train-split popularity, with the
// same history exclusion and tie-breaking as the model.
RankingMetrics EvaluatePopularity(const data::Dataset& dataset, Split split, const std::vector<int>& ks);

// Deterministic permutation of 0..n-1 (Fisher–Yates over splitmix64): the same on every
// platform and standard library, unlike std::shuffle.
std::vector<int64_t> SeededPermutation(int64_t n, uint64_t seed);

}  // namespace iisan::train
