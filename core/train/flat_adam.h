// Adam (PyTorch's update and defaults, no weight decay) over parameters packed group by group
// into one contiguous buffer, with their gradients packed into another. An update is a few
// element-wise kernels per group instead of about ten per parameter, the step count lives on
// the parameters' device (a captured CUDA graph replays correct bias corrections), and the
// packed gradients are what a data-parallel all-reduce sends.
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

namespace iisan::train {

class FlatAdam {
 public:
  struct Group {
    std::vector<torch::Tensor> params;  // trainable, same dtype and device
    double lr = 1e-3;
  };

  // Repoints every parameter's data at a view of its group's buffer (values kept) and gives
  // it a gradient that views the gradient buffer. Call after the model reached its device.
  explicit FlatAdam(std::vector<Group> groups, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8);

  void ZeroGrad();
  // The gradients of `loss` with respect to every parameter, written into the packed gradient
  // buffers by one concatenation per group: what ZeroGrad and loss.backward() leave there, with
  // neither the zero fill nor autograd's accumulation kernel per parameter. A parameter the loss
  // does not reach gets zeros.
  void Backward(const torch::Tensor& loss);
  void Step();

  // The packed gradients, one per group.
  std::vector<torch::Tensor> flat_grads() const;

  // The moments of every group and the step count, by name ("adam.<group>.exp_avg",
  // "adam.<group>.exp_avg_sq", "adam.step"), for a checkpoint. LoadState copies them back in
  // place (captured CUDA graphs keep pointing at the same buffers); a missing name or another
  // size is an std::runtime_error naming it.
  std::vector<std::pair<std::string, torch::Tensor>> State() const;
  void LoadState(const std::function<torch::Tensor(const std::string&)>& lookup);

 private:
  struct FlatGroup {
    std::vector<torch::Tensor> members;  // the parameters, each viewing a slice of `params`
    torch::Tensor params, grads, exp_avg, exp_avg_sq;
    double lr = 0.0;
  };
  std::vector<FlatGroup> groups_;
  torch::Tensor step_;
  double beta1_, beta2_, eps_;
};

}  // namespace iisan::train
