// The epoch loop of every method: Adam with the reference's optimizer groups (IISAN.md §6), one
// pass over the users per epoch in a seeded order, validation HR@10 after every epoch, early
// stopping, and the test metrics taken at the best validation epoch. How a step runs is a step
// engine's business (step_engine.h), evaluation is evaluation.h's. Each epoch is measured for
// the efficiency comparison (IISAN.md §7.1): training seconds (evaluation excluded),
// steady-state seconds per step, validation seconds, GPU utilisation, the run's peak memory.
//
// A caller steers a run through FitCallbacks: after each epoch `on_epoch` sees its metrics and
// may answer kStop; `cancel` is read between steps, and once raised Fit returns kCancelled
// after the step in flight, with Checkpoint() describing the state mid-epoch, so that a resumed
// run continues from that step and ends as an uninterrupted one would.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "core/data/dataset.h"
#include "core/train/data_parallel.h"
#include "core/train/device_stats.h"
#include "core/train/epoch_loss.h"
#include "core/train/evaluation.h"
#include "core/train/flat_adam.h"
#include "core/train/kernel_profile.h"
#include "core/train/method.h"
#include "core/train/ranking.h"
#include "core/train/recommender.h"
#include "core/train/run_summary.h"
#include "core/train/step_engine.h"

namespace iisan::train {

// Live-backbone methods under a CUDA graph: distinct items per batch are padded to a multiple
// of this, so that a few graphs cover every batch (about 10% padding at the reference's sizes).
inline constexpr int64_t kLiveGraphBucket = 32;

// Data-parallel runs agree on a raised cancel flag every this many steps (one host all-reduce
// of a number; a single process reads its flag before every step).
inline constexpr int64_t kCancelAgreementSteps = 16;

struct TrainOptions {
  int64_t batch_size = 64;
  int epochs = 100;
  int patience = 10;               // stop after `patience` + 1 epochs without a new best
  int64_t max_steps_per_epoch = 0;  // 0 = the whole epoch; otherwise the epoch time is extrapolated
  EvalOptions eval;      // validation and test after each epoch
  int selection_k = 10;  // model selection on validation HR@selection_k (must be one of eval.ks)
  LearningRates lr;
  uint64_t seed = 12345;
  torch::Device device = torch::kCPU;
  // On CUDA, one process: capture the training step as a CUDA graph after warm-up steps and
  // replay it (graph_step.cpp).
  bool cuda_graph = true;
  // On CUDA, float32 matrix products on tensor cores with tf32 inputs (train.matmul_precision).
  // LibTorch's switch is process-wide: the Trainer sets it either way when it trains on CUDA.
  bool tf32 = false;
  // Data-parallel runs: every this many steps, check that all ranks hold the same trainable
  // parameters (0 = never; a debugging aid that costs one all-gather per check).
  int64_t check_sync_every = 0;
  // > 0: profile this many training steps of the first epoch, from its step kProfileSkipSteps
  // (0-based; after the engine's warm-up and graph capture), then the evaluation pass after that
  // epoch, with the Kineto profiler (kernel_profile.h); FitCallbacks::on_profile receives both.
  // The epoch must have more than kProfileSkipSteps steps. After a resume in the middle of an
  // epoch, the first epoch with more than that many steps left is profiled.
  int64_t profile_steps = 0;
};

enum class EpochDecision { kContinue, kStop };

struct FitCallbacks {
  // After each epoch's evaluation (Checkpoint() then describes the state after that epoch).
  std::function<EpochDecision(const EpochRecord&)> on_epoch;
  // Raised (by a signal handler, a scheduler) to stop between steps; may be null.
  const std::atomic<bool>* cancel = nullptr;
  // After each step is queued (on the host, without waiting for the device): the epoch and the
  // number of steps of it done. For heartbeats and progress; may be empty.
  std::function<void(int epoch, int64_t steps_done)> after_step;
  // With TrainOptions::profile_steps: the training window's profile (phase "train_steps"), then
  // the evaluation pass's ("eval"). May be empty (the profiles' top rows are logged either way).
  std::function<void(const KernelProfile&)> on_profile;
};

struct TrainResult {
  RunStatus status = RunStatus::kCompleted;
  int best_epoch = 0;
  int epochs_run = 0;  // epochs completed
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
  // On a CUDA device, where the peak comes from (bytes): "resident" is allocated when Fit starts
  // (weights, optimizer moments, cached tables, evaluation sets), "train_peak" and "eval_peak"
  // are the allocator's peaks over the training epochs and over the evaluation passes. Empty on
  // the CPU, whose peak resident set cannot be split by phase.
  std::vector<std::pair<std::string, int64_t>> memory_phases;
};

// What Fit needs to go on exactly as an uninterrupted run would, after a completed epoch or in
// the middle of one: the progress (epochs done, the step to continue from, best metric, epochs
// without a new best, timing totals) as JSON, and the optimizer's moments and step, the random
// generators' states and the running loss as tensors. The model's trainable weights are saved
// beside it by the caller (checkpoint.h).
struct TrainCheckpoint {
  nlohmann::ordered_json state;
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
};

class Trainer {
 public:
  // The model must be Prepare()d for options.device. With `parallel` (which must outlive the
  // trainer) this process is one rank of a data-parallel job; see data_parallel.h.
  Trainer(const data::Dataset& dataset, Recommender model, TrainOptions options, DataParallel* parallel = nullptr);
  ~Trainer();

  // Trains from where the run stands (the first epoch, or where Resume left it) up to
  // options.epochs, early stopping, a kStop from on_epoch or the cancel flag. A non-finite
  // epoch loss throws std::runtime_error naming the epoch and its first step (1-based) whose loss
  // was not finite, once the epoch's steps have run.
  TrainResult Fit(const FitCallbacks& callbacks = {});
  // Fit with an observer that sees every epoch and never stops the run.
  TrainResult Fit(const std::function<void(const EpochRecord&)>& observe);
  TrainCheckpoint Checkpoint() const;
  // This process's random generators ("rng.cpu", and "rng.cuda" on a GPU): part of Checkpoint().
  std::vector<std::pair<std::string, torch::Tensor>> GeneratorStates() const;
  int epochs_done() const { return progress_.result.epochs_run; }
  // Restores a Checkpoint() of a run with the same config (its model weights already loaded).
  // std::runtime_error naming what differs when the seed or batch size do, or state is missing.
  void Resume(const TrainCheckpoint& checkpoint);
  RankingMetrics Evaluate(Split split);
  int64_t trainable_parameters() const;

 private:
  // Runs the epoch's steps from progress_.next_step; false when cancelled before its end.
  bool TrainEpoch(EpochRecord& record, const FitCallbacks& callbacks);
  bool CancelRequested(const std::atomic<bool>* cancel, int64_t step, int64_t first_step);
  // Logs a finished profile's top rows, hands it to on_profile and moves to the next stage.
  void FinishProfile(KernelProfile profile, const FitCallbacks& callbacks);

  const data::Dataset& dataset_;
  Recommender model_;
  TrainOptions options_;
  DataParallel* parallel_ = nullptr;
  // This rank's validation and test users on the device, built once for every evaluation.
  EvaluationSet valid_set_, test_set_;
  torch::Tensor log_popularity_;
  EpochLoss epoch_loss_;  // the epoch's step losses, on the device (the engines record them)
  std::unique_ptr<FlatAdam> optimizer_;
  std::unique_ptr<StepEngine> engine_;
  // train.profile_steps: the steps' window is pending, then the evaluation pass, then done.
  enum class ProfileStage { kOff, kSteps, kEval, kDone } profile_stage_ = ProfileStage::kOff;
  std::unique_ptr<KernelProfiler> profiler_;

  struct Progress {
    double best_hr = -1.0;
    int bad_epochs = 0;
    double train_total = 0.0, later_train_total = 0.0, eval_total = 0.0, valid_total = 0.0;
    double steady_total = 0.0, utilization_total = 0.0;
    int utilization_epochs = 0;
    bool truncated = false;
    // Mid-epoch (after a cancel): the epoch in flight, its next step and the seconds trained so far.
    int epoch_in_flight = 0;
    int64_t next_step = 0;
    double partial_train_seconds = 0.0;
    TrainResult result;  // its epochs_run: the epochs completed
  } progress_;
};

// std::invalid_argument, naming train.profile_steps, when options.profile_steps is negative, or
// positive while an epoch over `users` users has no step past kProfileSkipSteps to profile.
void CheckProfileSteps(const TrainOptions& options, int64_t users);

// Deterministic permutation of 0..n-1 (Fisher–Yates over splitmix64): the same on every
// platform and standard library, unlike std::shuffle.
std::vector<int64_t> SeededPermutation(int64_t n, uint64_t seed);

}  // namespace iisan::train
