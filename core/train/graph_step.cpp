// One process on CUDA: the step captured as a CUDA graph after warm-up steps and replayed.
// Batches are padded to the batch size so that shapes never change. Live-backbone methods pad
// each batch's distinct items to a multiple of kLiveGraphBucket and keep one graph per count,
// all sharing the first graph's memory pool.
#include <map>

#include <glog/logging.h>
#include <torch/torch.h>

#include "core/train/cuda_graph.h"
#include "core/train/step_engine.h"
#include "core/train/trainer.h"

namespace iisan::train {
namespace {

class GraphStep final : public StepEngine {
 public:
  explicit GraphStep(const StepContext& context) : c_(context) {
    const auto& options = *c_.options;
    const auto on_device = torch::TensorOptions().device(options.device);
    const int64_t max_len = c_.dataset->max_seq_len;
    static_ids_ = torch::zeros({options.batch_size, max_len + 1}, on_device.dtype(torch::kInt64));
    static_mask_ = torch::zeros({options.batch_size, max_len}, on_device.dtype(torch::kFloat32));
    if (UsesLiveBackbones(c_.model->config().method)) {
      static_inverse_ = torch::zeros({static_ids_.numel()}, on_device.dtype(torch::kInt64));
      LOG(INFO) << "training steps run as CUDA graphs, one per count of distinct items (a multiple of "
                << kLiveGraphBucket << "), each captured after warm-up steps";
    } else {
      LOG(INFO) << "training steps run as a CUDA graph (captured after 3 warm-up steps)";
    }
  }

  const char* name() const override { return "cuda graph"; }

  void Step(std::span<const int64_t> users) override {
    const auto padded = PadBatch(TrainingBatch(*c_.dataset, users), c_.options->batch_size);
    // Inputs travel through pinned memory straight into the graph's buffers: a copy from
    // pageable memory would wait for the GPU.
    static_ids_.copy_(padded.item_ids.pin_memory(), /*non_blocking=*/true);
    static_mask_.copy_(padded.log_mask.pin_memory(), /*non_blocking=*/true);
    int64_t key = 0;
    if (UsesLiveBackbones(c_.model->config().method)) key = StageDistinctItems(padded);
    // key > 0: the live methods' step over that many (padded) distinct items; 0: cached IISAN.
    const auto step = [this, key] {
      torch::Tensor loss;
      if (key > 0) {
        const StagedItems items{static_items_.ids.narrow(0, 0, key),
                                static_items_.pixels.defined() ? static_items_.pixels.narrow(0, 0, key)
                                                               : torch::Tensor()};
        loss = c_.model->LossStaged(items, static_inverse_, static_ids_, static_mask_, c_.log_popularity);
      } else {
        loss = c_.model->LossOnDevice(static_ids_, static_mask_, c_.log_popularity);
      }
      c_.optimizer->Backward(loss);  // the gradients straight into the packed buffers
      c_.optimizer->Step();
      c_.loss->Add(loss);
    };
    auto& slot = graphs_[key];
    if (!slot.graph) slot.graph = std::make_unique<CudaGraphStep>(c_.options->device);
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

 private:
  // Live methods: the batch's distinct items (padded to a multiple of kLiveGraphBucket) staged
  // into fixed buffers; returns their count.
  int64_t StageDistinctItems(const SequenceBatch& padded) {
    const auto distinct = FindDistinctItems(padded.item_ids, kLiveGraphBucket);
    const int64_t rows = distinct.ids.size(0);
    const auto staged = c_.model->StageItems(distinct.ids);
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
    return rows;
  }

  struct GraphSlot {
    std::unique_ptr<CudaGraphStep> graph;
    int warmups = 0;
  };

  StepContext c_;
  std::map<int64_t, GraphSlot> graphs_;  // by distinct items per batch (one entry for cached IISAN)
  const CudaGraphStep* pool_owner_ = nullptr;  // the first captured graph; the others share its pool
  torch::Tensor static_ids_, static_mask_, static_inverse_;
  StagedItems static_items_;  // live methods: room for every position of a batch
};

}  // namespace

std::unique_ptr<StepEngine> MakeGraphStep(const StepContext& context) { return std::make_unique<GraphStep>(context); }

}  // namespace iisan::train
