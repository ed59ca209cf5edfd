// An epoch's training loss as the steps leave it on the device: the sum of the step losses and
// the first step whose loss was not finite. Recording a step neither waits for the device nor
// reads it, and only updates fixed tensors in place, so a captured CUDA graph can record it; the
// trainer reads the record once, at the end of the epoch (DESIGN.md: no host-device
// synchronisation inside the step loop).
#pragma once

#include <cstdint>

#include <torch/types.h>

#include "core/train/data_parallel.h"

namespace iisan::train {

class EpochLoss {
 public:
  explicit EpochLoss(const torch::Device& device);

  // Before step `step` of the epoch: 0 starts the epoch afresh; a resumed epoch continues at its
  // next step with the record that Restore() brought back.
  void Begin(int64_t step);
  // Records the loss (a scalar on the device) of the next step.
  void Add(const torch::Tensor& loss);

  // The summed losses of the steps recorded (a float32 scalar on the device; engines of a
  // data-parallel job each hold their rank's share).
  const torch::Tensor& sum() const { return sum_; }
  // The 0-based index of the epoch's first step whose loss was not finite, or -1 when there is
  // none. Reads the device. With `parallel`, a collective: the earliest over the ranks (a rank's
  // step is non-finite when its share of the loss is).
  int64_t FirstNonFiniteStep(DataParallel* parallel = nullptr) const;

  // Mid-epoch checkpoints: the sum and the first non-finite step, as CPU tensors of one element,
  // and back. An undefined `first_nonfinite` (a checkpoint written before it was recorded) means
  // none.
  torch::Tensor SumState() const;
  torch::Tensor FirstNonFiniteState() const;
  void Restore(const torch::Tensor& sum, const torch::Tensor& first_nonfinite);

 private:
  torch::Tensor sum_;              // float32 scalar
  torch::Tensor next_step_;        // int64 scalar: the index Add() gives the next loss
  torch::Tensor first_nonfinite_;  // int64 scalar, -1 until a loss is not finite
};

}  // namespace iisan::train
