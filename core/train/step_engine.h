// The training step behind one interface, so that the epoch loop (trainer.cpp) does not know how
// a step runs. Three engines, each in its own file:
//   eager_step.cpp     forward, backward and Adam as LibTorch calls (CPU, or CUDA without graphs)
//   graph_step.cpp     one process on CUDA: the step captured as a CUDA graph and replayed
//   parallel_step.cpp  one rank of a data-parallel job: the global batch dealt to the ranks,
//                      item embeddings all-gathered, gradients all-reduced
// Every engine records each step's loss in the epoch's EpochLoss without synchronising with the
// host.
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include <torch/types.h>

#include "core/data/dataset.h"
#include "core/train/data_parallel.h"
#include "core/train/epoch_loss.h"
#include "core/train/flat_adam.h"
#include "core/train/recommender.h"

namespace iisan::train {

struct TrainOptions;

// What every engine works on; all of it outlives the engine.
struct StepContext {
  const data::Dataset* dataset = nullptr;
  Recommender model{nullptr};
  FlatAdam* optimizer = nullptr;
  torch::Tensor log_popularity;  // [N+1] on the device
  EpochLoss* loss = nullptr;     // each step records its (rank's share of the) loss
  const TrainOptions* options = nullptr;
};

// What an engine measured over an epoch.
struct StepEngineStats {
  int64_t comm_bytes = 0;     // data-parallel: gradient bytes all-reduced by this rank
  double comm_seconds = 0.0;  // data-parallel: time waiting for the all-reduce
};

class StepEngine {
 public:
  virtual ~StepEngine() = default;
  // Starts an epoch (or the rest of one, after a resume); its first `warmup` steps carry
  // one-time costs.
  virtual void BeginEpoch(int64_t warmup) {}
  // One optimizer step on a global batch of users, in the epoch's order.
  virtual void Step(std::span<const int64_t> users) = 0;
  virtual StepEngineStats EndEpoch() { return {}; }
  // How the steps run, for reports: "eager", "cuda graph" or "data-parallel".
  virtual const char* name() const = 0;
};

// The left-padded training sequences of `users` (a batch built on the host).
SequenceBatch TrainingBatch(const data::Dataset& dataset, std::span<const int64_t> users);
// `batch` with all-zero rows (no items, no targets) appended up to `rows` users.
SequenceBatch PadBatch(const SequenceBatch& batch, int64_t rows);

std::unique_ptr<StepEngine> MakeEagerStep(const StepContext& context);
std::unique_ptr<StepEngine> MakeGraphStep(const StepContext& context);
std::unique_ptr<StepEngine> MakeParallelStep(const StepContext& context, DataParallel& parallel);

// The engine a run uses: data-parallel with `parallel`; CUDA graphs on one CUDA device when
// options.cuda_graph and the build supports them; eager otherwise.
std::unique_ptr<StepEngine> MakeStepEngine(const StepContext& context, DataParallel* parallel);

}  // namespace iisan::train
