// DataParallel over a ProcessGroup.
#include "distributed/trainer_parallel.h"

#include <torch/torch.h>

#include "distributed/all_gather_autograd.h"
#include "distributed/metric_reduction.h"
#include "distributed/parameter_sync.h"
#include "distributed/user_sharder.h"

namespace iisan::distributed {

ProcessGroupParallel::ProcessGroupParallel(ProcessGroup& group, torch::Device device,
                                           const std::vector<torch::Tensor>& trainable, size_t bucket_bytes)
    : group_(group), device_comm_(group.For(device)) {
  sync_ = std::make_unique<GradientSynchronizer>(device_comm_, trainable, bucket_bytes);
}

std::vector<std::vector<int64_t>> ProcessGroupParallel::Deal(std::span<const int64_t> users,
                                                            std::span<const int64_t> costs) const {
  return DealUsers(users, costs, group_.world.world_size);
}

std::pair<int64_t, int64_t> ProcessGroupParallel::EvaluationUsers(int64_t users) const {
  const auto range = EvaluationRange(users, group_.world.world_size, group_.world.rank);
  return {range.begin, range.end};
}

torch::Tensor ProcessGroupParallel::AllGather(const torch::Tensor& local) {
  return AllGatherWithGradient(device_comm_, local).flatten(0, 1);  // [world, b, ...] -> [world * b, ...]
}

// Each rank's loss is its share of the global mean, so the gradients are summed (share 1).
void ProcessGroupParallel::BeforeBackward() { sync_->Prepare(1.0); }

train::CommStats ProcessGroupParallel::AfterBackward() {
  const auto stats = sync_->Finish();
  return {stats.bytes, stats.wait_seconds};
}

void ProcessGroupParallel::Broadcast(const std::vector<torch::Tensor>& tensors) {
  BroadcastTensors(device_comm_, tensors, /*root=*/0);
}

double ProcessGroupParallel::Sum(double value) {
  const double values[] = {value};
  return AllReduceSum(*group_.host, values)[0];
}

train::RankingMetrics ProcessGroupParallel::ReduceMetrics(const train::RankingMetrics& local, int64_t expected_users) {
  return ReduceRankingMetrics(*group_.host, local, expected_users);
}

void ProcessGroupParallel::CheckInSync(const std::vector<torch::Tensor>& tensors,
                                       const std::vector<std::string>& names, int64_t step) {
  CheckTensorsInSync(device_comm_, tensors, names, step);
}

}  // namespace iisan::distributed
