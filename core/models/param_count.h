// Counting a module's trainable and frozen parameters (the "trainable parameters" of TPME).
#pragma once

#include <cstdint>

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

}  // namespace iisan::models
