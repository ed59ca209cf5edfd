// Bucketed, hook-driven gradient all-reduce.
#include "distributed/gradient_synchronizer.h"

#include <chrono>
#include <cmath>
#include <stdexcept>

#include <torch/torch.h>

namespace iisan::distributed {

GradientSynchronizer::GradientSynchronizer(Communicator& comm, const std::vector<torch::Tensor>& parameters,
                                           size_t bucket_bytes)
    : comm_(comm) {
  for (auto it = parameters.rbegin(); it != parameters.rend(); ++it) {
    if (it->requires_grad()) parameters_.push_back(*it);
  }
  buckets_ = PlanBuckets(parameters_, bucket_bytes);
  bucket_of_.resize(parameters_.size());
  slot_of_.resize(parameters_.size());
  for (size_t b = 0; b < buckets_.size(); ++b) {
    const auto& bucket = buckets_[b];
    buffers_.push_back(torch::zeros({bucket.numel}, torch::TensorOptions().dtype(bucket.dtype).device(bucket.device)));
    for (size_t k = 0; k < bucket.members.size(); ++k) {
      bucket_of_[bucket.members[k]] = b;
      slot_of_[bucket.members[k]] = k;
    }
  }
  missing_.resize(buckets_.size());
  for (size_t i = 0; i < parameters_.size(); ++i) {
    // The hook captures the index, not the tensor: a tensor holding a hook that holds the
    // tensor would never be freed.
    hook_handles_.push_back(parameters_[i].register_hook([this, i](const torch::Tensor& grad) { OnGradient(i, grad); }));
  }
}

GradientSynchronizer::~GradientSynchronizer() {
  for (size_t i = 0; i < parameters_.size(); ++i) parameters_[i].remove_hook(hook_handles_[i]);
}

int64_t GradientSynchronizer::bytes_per_step() const {
  int64_t bytes = 0;
  for (const auto& bucket : buckets_) bytes += bucket.bytes();
  return bytes;
}

void GradientSynchronizer::Prepare(std::optional<double> local_share) {
  std::lock_guard lock(mutex_);
  if (prepared_) throw std::logic_error("GradientSynchronizer: Prepare() called twice without Finish()");
  share_ = local_share.value_or(1.0 / comm_.world_size());
  if (!std::isfinite(share_) || share_ < 0.0) {
    throw std::invalid_argument("GradientSynchronizer: share " + std::to_string(share_) + " is not a finite weight >= 0");
  }
  received_.assign(parameters_.size(), false);
  for (size_t b = 0; b < buckets_.size(); ++b) missing_[b] = buckets_[b].members.size();
  next_bucket_ = 0;
  started_in_backward_ = 0;
  prepared_ = true;
}

void GradientSynchronizer::OnGradient(size_t index, const torch::Tensor& grad) {
  std::lock_guard lock(mutex_);
  if (!prepared_) {
    throw std::logic_error("GradientSynchronizer: a gradient arrived outside Prepare()/Finish(); every backward "
                           "pass of a synchronised model must be bracketed by them");
  }
  if (received_[index]) {
    throw std::logic_error("GradientSynchronizer: a parameter received two gradients in one step; run one backward "
                           "pass per Prepare()/Finish()");
  }
  if (grad.is_sparse()) throw std::invalid_argument("GradientSynchronizer: sparse gradients are not supported");
  received_[index] = true;
  const size_t b = bucket_of_[index];
  auto slot = buffers_[b].narrow(0, buckets_[b].offsets[slot_of_[index]], parameters_[index].numel());
  slot.copy_(grad.reshape({-1}));
  if (share_ != 1.0) slot.mul_(share_);
  if (--missing_[b] == 0) started_in_backward_ += static_cast<int>(StartReadyBuckets());
}

size_t GradientSynchronizer::StartReadyBuckets() {
  std::vector<torch::Tensor> ready;
  while (next_bucket_ < buckets_.size() && missing_[next_bucket_] == 0) ready.push_back(buffers_[next_bucket_++]);
  const size_t started = ready.size();
  // One call for consecutive buckets: NCCL fuses them into one group launch.
  if (started) in_flight_.push_back(comm_.StartAllReduce(std::move(ready), ReduceOp::kSum));
  return started;
}

SyncStats GradientSynchronizer::Finish() {
  std::unique_lock lock(mutex_);
  if (!prepared_) throw std::logic_error("GradientSynchronizer: Finish() without Prepare()");
  for (size_t b = next_bucket_; b < buckets_.size(); ++b) {
    const auto& bucket = buckets_[b];
    for (size_t k = 0; k < bucket.members.size(); ++k) {
      const size_t index = bucket.members[k];
      if (!received_[index]) buffers_[b].narrow(0, bucket.offsets[k], parameters_[index].numel()).zero_();
    }
    missing_[b] = 0;
  }
  StartReadyBuckets();
  auto works = std::move(in_flight_);
  in_flight_.clear();
  SyncStats stats;
  stats.buckets = static_cast<int>(buckets_.size());
  stats.buckets_started_in_backward = started_in_backward_;
  stats.bytes = bytes_per_step();
  prepared_ = false;
  lock.unlock();

  const auto start = std::chrono::steady_clock::now();
  for (auto& work : works) work->Wait();
  stats.wait_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < parameters_.size(); ++i) {
    const size_t b = bucket_of_[i];
    auto& parameter = parameters_[i];
    auto synced = buffers_[b].narrow(0, buckets_[b].offsets[slot_of_[i]], parameter.numel()).view_as(parameter);
    if (parameter.grad().defined()) {
      parameter.mutable_grad().copy_(synced);
    } else {
      parameter.mutable_grad() = synced.clone();
    }
  }
  return stats;
}

}  // namespace iisan::distributed
