// TPME = α1·t_norm + α2·p_norm + α3·m_norm with x_norm = (x − min) / (max − min) per axis.
#include "core/train/efficiency.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace iisan::train {
namespace {

constexpr double kWeightSumTolerance = 1e-9;

void CheckWeights(const TpmeWeights& weights) {
  for (const double weight : {weights.time, weights.parameters, weights.memory}) {
    if (!std::isfinite(weight) || weight < 0.0) {
      throw std::invalid_argument("TPME weights must be finite and non-negative (time " +
                                  std::to_string(weights.time) + ", parameters " +
                                  std::to_string(weights.parameters) + ", memory " +
                                  std::to_string(weights.memory) + ")");
    }
  }
  const double sum = weights.time + weights.parameters + weights.memory;
  if (std::abs(sum - 1.0) > kWeightSumTolerance) {
    throw std::invalid_argument("TPME weights must sum to 1, got " + std::to_string(sum));
  }
}

void CheckValue(const EfficiencyInput& input, const char* axis, double value) {
  if (!std::isfinite(value) || value < 0.0) {
    throw std::invalid_argument("TPME input '" + input.label + "': " + axis +
                                " must be finite and non-negative, got " + std::to_string(value));
  }
}

// (v − min) / (max − min) for every value; all zeros when the axis does not vary, since no
// entry is then better or worse than another on it.
std::vector<double> MinMaxNormalised(const std::vector<double>& values) {
  const auto [min_it, max_it] = std::minmax_element(values.begin(), values.end());
  const double min = *min_it;
  const double range = *max_it - min;
  std::vector<double> normalised(values.size(), 0.0);
  if (range > 0.0) {
    for (size_t i = 0; i < values.size(); ++i) normalised[i] = (values[i] - min) / range;
  }
  return normalised;
}

}  // namespace

std::vector<double> Tpme(const std::vector<EfficiencyInput>& inputs, TpmeWeights weights) {
  CheckWeights(weights);
  if (inputs.empty()) return {};
  std::vector<double> time, parameters, memory;
  for (const auto& input : inputs) {
    CheckValue(input, "train_seconds_per_epoch", input.train_seconds_per_epoch);
    CheckValue(input, "trainable_parameters", static_cast<double>(input.trainable_parameters));
    CheckValue(input, "peak_memory_bytes", input.peak_memory_bytes);
    time.push_back(input.train_seconds_per_epoch);
    parameters.push_back(static_cast<double>(input.trainable_parameters));
    memory.push_back(input.peak_memory_bytes);
  }
  const auto time_norm = MinMaxNormalised(time);
  const auto parameters_norm = MinMaxNormalised(parameters);
  const auto memory_norm = MinMaxNormalised(memory);
  std::vector<double> scores(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    scores[i] = weights.time * time_norm[i] + weights.parameters * parameters_norm[i] +
                weights.memory * memory_norm[i];
  }
  return scores;
}

}  // namespace iisan::train
