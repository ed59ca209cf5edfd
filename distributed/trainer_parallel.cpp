// DataParallel over a ProcessGroup.
#include "distributed/trainer_parallel.h"

#include <chrono>

#include <torch/torch.h>

#include "distributed/all_gather_autograd.h"
#include "distributed/metric_reduction.h"
#include "distributed/parameter_sync.h"

namespace iisan::distributed {

ProcessGroupParallel::ProcessGroupParallel(ProcessGroup& group, torch::Device device,
                                           const std::vector<torch::Tensor>& trainable, size_t bucket_bytes)
    : group_(group), device_comm_(group.For(device)), trainable_(trainable), bucket_bytes_(bucket_bytes) {}

torch::Tensor ProcessGroupParallel::AllGather(const torch::Tensor& local) {
  return AllGatherWithGradient(device_comm_, local).flatten(0, 1);  // [world, b, ...] -> [world * b, ...]
}

// Each rank's loss is its share of the global mean, so the gradients are summed (share 1).
void ProcessGroupParallel::BeforeBackward() {
  if (!sync_) sync_ = std::make_unique<GradientSynchronizer>(device_comm_, trainable_, bucket_bytes_);
  sync_->Prepare(1.0);
}

train::CommStats ProcessGroupParallel::AfterBackward() {
  const auto stats = sync_->Finish();
  return {stats.bytes, stats.wait_seconds};
}

void ProcessGroupParallel::Broadcast(const std::vector<torch::Tensor>& tensors) {
  BroadcastTensors(device_comm_, tensors, /*root=*/0);
}

double ProcessGroupParallel::Sum(double value) {
  const double values[] = {value};
  return ::iisan::distributed::AllReduceSum(*group_.host, values)[0];
}

train::RankingMetrics ProcessGroupParallel::ReduceMetrics(const train::RankingMetrics& local, int64_t expected_users) {
  return ReduceRankingMetrics(*group_.host, local, expected_users);
}

void ProcessGroupParallel::CheckInSync(const std::vector<torch::Tensor>& tensors,
                                       const std::vector<std::string>& names, int64_t step) {
  CheckTensorsInSync(device_comm_, tensors, names, step);
}

bool ProcessGroupParallel::SupportsGraphSteps() const { return device_comm_.SupportsEnqueueOnly(); }

void ProcessGroupParallel::SetEnqueueOnly(bool on) { device_comm_.SetEnqueueOnly(on); }

void ProcessGroupParallel::WaitForStep() { device_comm_.WaitForDevice("training step (CUDA graph)"); }

void ProcessGroupParallel::AllReduceSum(const std::vector<torch::Tensor>& tensors) {
  device_comm_.StartAllReduce(tensors, ReduceOp::kSum)->Wait();
}

double ProcessGroupParallel::TimeAllReduce(const std::vector<torch::Tensor>& like) {
  std::vector<torch::Tensor> scratch;
  for (const auto& t : like) scratch.push_back(torch::zeros_like(t));
  device_comm_.StartAllReduce(scratch, ReduceOp::kSum)->Wait();  // warm, and every rank lined up
  constexpr int kRepeats = 5;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < kRepeats; ++i) device_comm_.StartAllReduce(scratch, ReduceOp::kSum)->Wait();
  return 1e3 * std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / kRepeats;
}

}  // namespace iisan::distributed
