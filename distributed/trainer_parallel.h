// The trainer's DataParallel interface (core/train/data_parallel.h) over a ProcessGroup:
// embeddings all-gathered with their gradient, trainable gradients summed by the bucketed,
// hook-driven GradientSynchronizer, parameters broadcast from rank 0, metric sums reduced.
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
  // The policy of user_sharder.h.
  std::vector<std::vector<int64_t>> Deal(std::span<const int64_t> users, std::span<const int64_t> costs) const override;
  std::pair<int64_t, int64_t> EvaluationUsers(int64_t users) const override;
  torch::Tensor AllGather(const torch::Tensor& local) override;
  void BeforeBackward() override;
  train::CommStats AfterBackward() override;
  void Broadcast(const std::vector<torch::Tensor>& tensors) override;
  double Sum(double value) override;
  train::RankingMetrics ReduceMetrics(const train::RankingMetrics& local, int64_t expected_users) override;
  void CheckInSync(const std::vector<torch::Tensor>& tensors, const std::vector<std::string>& names,
                   int64_t step) override;

  // Trainable bytes all-reduced per step (= the trainable parameters' bytes).
  int64_t bytes_per_step() const { return sync_->bytes_per_step(); }

 private:
  ProcessGroup& group_;
  Communicator& device_comm_;
  std::unique_ptr<GradientSynchronizer> sync_;
};

}  // namespace iisan::distributed
