// TPME, the paper's combined efficiency score (IISAN.md §7.1): training time, trainable
// parameters and peak memory, each min–max normalised within the compared set and weighted.
// Lower is better; a score means nothing outside the set it was computed in. No LibTorch here,
// so that reports can be built and tested without it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace iisan::train {

struct EfficiencyInput {
  std::string label;  // names the entry in error messages
  double train_seconds_per_epoch = 0.0;
  int64_t trainable_parameters = 0;
  double peak_memory_bytes = 0.0;
};

// The paper's weights (α1 time, α2 parameters, α3 memory); they must be non-negative and sum to 1.
struct TpmeWeights {
  double time = 0.45;
  double parameters = 0.1;
  double memory = 0.45;
};

// One score per input, in input order. An axis on which every input has the same value
// contributes 0 for all of them. Throws std::invalid_argument for bad weights or for a
// negative or non-finite input value; an empty input gives an empty result.
std::vector<double> Tpme(const std::vector<EfficiencyInput>& inputs, TpmeWeights weights = {});

}  // namespace iisan::train
