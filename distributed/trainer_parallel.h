// The trainer's DataParallel interface (core/train/data_parallel.h) over a ProcessGroup:
// embeddings all-gathered with their gradient, trainable gradients summed by the bucketed,
// hook-driven GradientSynchronizer (eager steps) or by one grouped all-reduce of the packed
// gradients (CUDA-graph steps, NCCL), parameters broadcast from rank 0, metric sums reduced.
#pragma once

#include <memory>
#include <vector>

#include "core/train/data_parallel.h"
#include "distributed/gradient_synchronizer.h"
#include "distributed/process_group.h"

namespace iisan::distributed {

class ProcessGroupParallel : public train::DataParallel {
 public:
  // `trainable`: the model's trainable parameters (their gradients are synchronised); `group`
  // must outlive this object. Gradients and parameters travel through the communicator of
  // `device`, metric sums through the host communicator.
  ProcessGroupParallel(ProcessGroup& group, torch::Device device, const std::vector<torch::Tensor>& trainable,
                       size_t bucket_bytes = kDefaultBucketBytes);

  int rank() const override { return group_.world.rank; }
  int world_size() const override { return group_.world.world_size; }
  torch::Tensor AllGather(const torch::Tensor& local) override;
  void BeforeBackward() override;
  train::CommStats AfterBackward() override;
  void Broadcast(const std::vector<torch::Tensor>& tensors) override;
  double Sum(double value) override;
  train::RankingMetrics ReduceMetrics(const train::RankingMetrics& local, int64_t expected_users) override;
  void CheckInSync(const std::vector<torch::Tensor>& tensors, const std::vector<std::string>& names,
                   int64_t step) override;
  bool SupportsGraphSteps() const override;
  void SetEnqueueOnly(bool on) override;
  void WaitForStep() override;
  void AllReduceSum(const std::vector<torch::Tensor>& tensors) override;
  double TimeAllReduce(const std::vector<torch::Tensor>& like) override;

 private:
  ProcessGroup& group_;
  Communicator& device_comm_;
  std::vector<torch::Tensor> trainable_;
  size_t bucket_bytes_;
  // Made at the first eager step: its gradient hooks must not exist in CUDA-graph steps, whose
  // gradients are summed by AllReduceSum over the optimizer's packed buffers instead.
  std::unique_ptr<GradientSynchronizer> sync_;
};

}  // namespace iisan::distributed
