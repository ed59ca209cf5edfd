// One rank of a data-parallel job (data_parallel.h): the global batch, the one a single process
// would train on, is dealt to the ranks by the job's sharding policy (DataParallel::Deal, the
// policy of distributed/user_sharder.h); every rank pads its share to the same row count, embeds
// its rows' items, all-gathers the embeddings and adds its share of the loss; the backward pass
// all-reduces the trainable gradients.
#include <algorithm>

#include <torch/torch.h>

#include "core/models/param_count.h"
#include "core/train/step_engine.h"
#include "core/train/trainer.h"

namespace iisan::train {
namespace {

class ParallelStep final : public StepEngine {
 public:
  ParallelStep(const StepContext& context, DataParallel& parallel) : c_(context), parallel_(parallel) {}

  const char* name() const override { return "data-parallel"; }

  void BeginEpoch(int64_t warmup) override { stats_ = {}; }

  void Step(std::span<const int64_t> users) override {
    const int rank = parallel_.rank();
    std::vector<int64_t> costs;
    costs.reserve(users.size());
    for (const int64_t user : users) costs.push_back(static_cast<int64_t>(c_.dataset->train_sequence(user).size()));
    const auto shares = parallel_.Deal(users, costs);
    int64_t rows = 0;
    for (const auto& share : shares) rows = std::max<int64_t>(rows, static_cast<int64_t>(share.size()));
    std::vector<torch::Tensor> ids, masks;
    for (const auto& share : shares) {
      const auto padded = PadBatch(TrainingBatch(*c_.dataset, share), rows);
      ids.push_back(padded.item_ids);
      masks.push_back(padded.log_mask);
    }
    const SequenceBatch global{torch::cat(ids, 0), torch::cat(masks, 0)};

    c_.optimizer->ZeroGrad();
    auto loss = c_.model->LossShard(global, rank * rows, rows, c_.log_popularity,
                                    [this](const torch::Tensor& local) { return parallel_.AllGather(local); });
    parallel_.BeforeBackward();
    loss.backward();
    const auto comm = parallel_.AfterBackward();
    c_.optimizer->Step();
    c_.loss->Add(loss);
    stats_.comm_bytes += comm.bytes;
    stats_.comm_seconds += comm.seconds;
    ++steps_;
    const int64_t every = c_.options->check_sync_every;
    if (every > 0 && steps_ % every == 0) {
      std::vector<torch::Tensor> tensors;
      std::vector<std::string> names;
      for (auto& [name, tensor] : models::NamedTrainableParameters(*c_.model)) {
        names.push_back(name);
        tensors.push_back(tensor);
      }
      parallel_.CheckInSync(tensors, names, steps_);
    }
  }

  StepEngineStats EndEpoch() override { return stats_; }

 private:
  StepContext c_;
  DataParallel& parallel_;
  StepEngineStats stats_;
  int64_t steps_ = 0;  // steps run by this engine (the sync check's clock)
};

}  // namespace

std::unique_ptr<StepEngine> MakeParallelStep(const StepContext& context, DataParallel& parallel) {
  return std::make_unique<ParallelStep>(context, parallel);
}

}  // namespace iisan::train
