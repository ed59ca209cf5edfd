// The epoch's loss record: in-place device updates per step, one read at the epoch's end.
#include "core/train/epoch_loss.h"

#include <torch/torch.h>

namespace iisan::train {

EpochLoss::EpochLoss(const torch::Device& device) {
  const auto on_device = torch::TensorOptions().device(device);
  sum_ = torch::zeros({}, on_device);
  next_step_ = torch::zeros({}, on_device.dtype(torch::kInt64));
  first_nonfinite_ = torch::full({}, -1, on_device.dtype(torch::kInt64));
}

void EpochLoss::Begin(int64_t step) {
  if (step == 0) {
    sum_.zero_();
    first_nonfinite_.fill_(-1);
  }
  next_step_.fill_(step);
}

void EpochLoss::Add(const torch::Tensor& loss) {
  const auto value = loss.detach();
  sum_.add_(value);
  // The first non-finite step is kept: later ones (a diverged model stays non-finite) do not
  // move it.
  const auto first = first_nonfinite_.lt(0).logical_and(torch::isfinite(value).logical_not());
  first_nonfinite_.copy_(torch::where(first, next_step_, first_nonfinite_));
  next_step_.add_(1);
}

int64_t EpochLoss::FirstNonFiniteStep(DataParallel* parallel) const {
  if (!parallel) return first_nonfinite_.item<int64_t>();
  torch::NoGradGuard no_grad;
  // Gathered as float64 (exact for any step count): every backend gathers floating tensors.
  const auto all = parallel->AllGather(first_nonfinite_.to(torch::kFloat64).reshape({1})).to(torch::kCPU);
  const auto found = all.masked_select(all.ge(0));
  return found.numel() > 0 ? static_cast<int64_t>(found.min().item<double>()) : -1;
}

torch::Tensor EpochLoss::SumState() const { return sum_.detach().to(torch::kCPU).reshape({1}); }

torch::Tensor EpochLoss::FirstNonFiniteState() const { return first_nonfinite_.to(torch::kCPU).reshape({1}); }

void EpochLoss::Restore(const torch::Tensor& sum, const torch::Tensor& first_nonfinite) {
  // In place: captured graphs update these tensors.
  sum_.copy_(sum.reshape({}).to(sum_.dtype()));
  if (first_nonfinite.defined()) {
    first_nonfinite_.copy_(first_nonfinite.reshape({}).to(torch::kInt64));
  } else {
    first_nonfinite_.fill_(-1);
  }
}

}  // namespace iisan::train
