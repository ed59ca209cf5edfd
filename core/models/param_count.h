// The one walk over a module's trainable parameters (what trains, is checkpointed, synchronised
// and counted as the "trainable parameters" of TPME), and the count of trainable and frozen ones.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <torch/nn/module.h>

namespace iisan::models {

struct ParameterCount {
  int64_t trainable = 0;  // elements of parameters with requires_grad
  int64_t frozen = 0;     // elements of the others
  int64_t total() const { return trainable + frozen; }
};

inline ParameterCount CountParameters(const torch::nn::Module& module) {
  ParameterCount count;
  for (const auto& parameter : module.parameters()) {
    (parameter.requires_grad() ? count.trainable : count.frozen) += parameter.numel();
  }
  return count;
}

// The parameters with requires_grad, with their dotted names, in registration order (the same
// order on every rank and every run).
inline std::vector<std::pair<std::string, torch::Tensor>> NamedTrainableParameters(const torch::nn::Module& module) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& item : module.named_parameters()) {
    if (item.value().requires_grad()) out.emplace_back(item.key(), item.value());
  }
  return out;
}

inline std::vector<torch::Tensor> TrainableParameters(const torch::nn::Module& module) {
  std::vector<torch::Tensor> out;
  for (auto& [name, tensor] : NamedTrainableParameters(module)) out.push_back(std::move(tensor));
  return out;
}

}  // namespace iisan::models
