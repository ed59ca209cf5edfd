// Packed-parameter Adam.
#include "core/train/flat_adam.h"

#include <stdexcept>

#include <torch/torch.h>

namespace iisan::train {

FlatAdam::FlatAdam(std::vector<Group> groups, double beta1, double beta2, double eps)
    : beta1_(beta1), beta2_(beta2), eps_(eps) {
  torch::NoGradGuard no_grad;
  for (auto& group : groups) {
    if (group.params.empty()) continue;
    const auto options = group.params.front().options();
    int64_t total = 0;
    for (const auto& p : group.params) {
      if (p.scalar_type() != options.dtype().toScalarType() || p.device() != options.device()) {
        throw std::invalid_argument("FlatAdam: a group's parameters must share dtype and device");
      }
      total += p.numel();
    }
    FlatGroup flat;
    flat.lr = group.lr;
    flat.params = torch::empty({total}, options.requires_grad(false));
    flat.grads = torch::zeros({total}, options.requires_grad(false));
    flat.exp_avg = torch::zeros({total}, options.requires_grad(false));
    flat.exp_avg_sq = torch::zeros({total}, options.requires_grad(false));
    int64_t offset = 0;
    for (auto& p : group.params) {
      const int64_t n = p.numel();
      auto view = flat.params.narrow(0, offset, n).view(p.sizes());
      view.copy_(p);
      p.set_data(view);
      p.mutable_grad() = flat.grads.narrow(0, offset, n).view(p.sizes());
      offset += n;
    }
    flat.members = group.params;
    if (!step_.defined()) step_ = torch::zeros({}, options.requires_grad(false));
    groups_.push_back(std::move(flat));
  }
}

std::vector<std::pair<std::string, torch::Tensor>> FlatAdam::State() const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (size_t g = 0; g < groups_.size(); ++g) {
    const std::string prefix = "adam." + std::to_string(g) + ".";
    out.emplace_back(prefix + "exp_avg", groups_[g].exp_avg);
    out.emplace_back(prefix + "exp_avg_sq", groups_[g].exp_avg_sq);
  }
  if (step_.defined()) out.emplace_back("adam.step", step_);
  return out;
}

void FlatAdam::LoadState(const std::function<torch::Tensor(const std::string&)>& lookup) {
  torch::NoGradGuard no_grad;
  for (auto& [name, target] : State()) {
    const auto value = lookup(name);
    if (!value.defined()) throw std::runtime_error("optimizer state '" + name + "' is missing");
    if (value.numel() != target.numel()) {
      throw std::runtime_error("optimizer state '" + name + "' has " + std::to_string(value.numel()) +
                               " values, this model's optimizer needs " + std::to_string(target.numel()) +
                               "; was it saved by a run of another method or model config?");
    }
    target.copy_(value.reshape(target.sizes()));
  }
}

void FlatAdam::ZeroGrad() {
  for (auto& group : groups_) group.grads.zero_();
}

void FlatAdam::Backward(const torch::Tensor& loss) {
  if (groups_.empty()) return;
  std::vector<torch::Tensor> inputs;
  for (const auto& group : groups_) inputs.insert(inputs.end(), group.members.begin(), group.members.end());
  const auto grads = torch::autograd::grad({loss}, inputs, /*grad_outputs=*/{}, /*retain_graph=*/false,
                                           /*create_graph=*/false, /*allow_unused=*/true);
  torch::NoGradGuard no_grad;
  size_t next = 0;
  for (auto& group : groups_) {
    std::vector<torch::Tensor> pieces;
    pieces.reserve(group.members.size());
    for (const auto& member : group.members) {
      const auto& grad = grads[next++];
      pieces.push_back(grad.defined() ? grad.reshape({-1}) : torch::zeros({member.numel()}, group.grads.options()));
    }
    torch::cat_out(group.grads, pieces, 0);
  }
}

void FlatAdam::Step() {
  if (groups_.empty()) return;
  torch::NoGradGuard no_grad;
  step_.add_(1.0);
  const auto bias_correction1 = 1.0 - torch::pow(beta1_, step_);
  const auto bias_correction2 = 1.0 - torch::pow(beta2_, step_);
  for (auto& group : groups_) {
    group.exp_avg.mul_(beta1_).add_(group.grads, 1.0 - beta1_);
    group.exp_avg_sq.mul_(beta2_).addcmul_(group.grads, group.grads, 1.0 - beta2_);
    const auto denom = (group.exp_avg_sq / bias_correction2).sqrt_().add_(eps_);
    group.params.sub_(group.exp_avg / denom * (group.lr / bias_correction1));
  }
}

std::vector<torch::Tensor> FlatAdam::flat_grads() const {
  std::vector<torch::Tensor> out;
  for (const auto& group : groups_) out.push_back(group.grads);
  return out;
}

}  // namespace iisan::train
