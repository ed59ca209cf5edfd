// Batches on the host and the choice of step engine.
#include "core/train/step_engine.h"

#include <torch/torch.h>

#include "core/train/cuda_graph.h"
#include "core/train/trainer.h"

namespace iisan::train {

SequenceBatch TrainingBatch(const data::Dataset& dataset, std::span<const int64_t> users) {
  std::vector<std::vector<int32_t>> sequences;
  sequences.reserve(users.size());
  for (const int64_t user : users) {
    const auto seq = dataset.train_sequence(user);
    sequences.emplace_back(seq.begin(), seq.end());
  }
  return MakeSequenceBatch(sequences, dataset.max_seq_len);
}

SequenceBatch PadBatch(const SequenceBatch& batch, int64_t rows) {
  const int64_t have = batch.item_ids.size(0);
  if (have == rows) return batch;
  SequenceBatch padded{torch::zeros({rows, batch.item_ids.size(1)}, batch.item_ids.options()),
                       torch::zeros({rows, batch.log_mask.size(1)}, batch.log_mask.options())};
  padded.item_ids.narrow(0, 0, have).copy_(batch.item_ids);
  padded.log_mask.narrow(0, 0, have).copy_(batch.log_mask);
  return padded;
}

std::unique_ptr<StepEngine> MakeStepEngine(const StepContext& context, DataParallel* parallel) {
  if (parallel) return MakeParallelStep(context, *parallel);
  const auto& options = *context.options;
  if (options.cuda_graph && options.device.is_cuda() && CudaGraphStep::Supported()) return MakeGraphStep(context);
  return MakeEagerStep(context);
}

}  // namespace iisan::train
