// TPME against the worked example of IISAN.md §7.1, computed by hand from the formula.
#include "core/train/efficiency.h"

#include <stdexcept>

#include <gtest/gtest.h>

namespace iisan::train {
namespace {

constexpr double kGB = 1e9;

// {FFT, Adapter, LoRA, IISAN-cached}: T in s/epoch, P trainable parameters, M in GB.
std::vector<EfficiencyInput> WorkedExample() {
  return {{"FFT", 443, 194897216, 47 * kGB},
          {"Adapter", 350, 4965440, 37 * kGB},
          {"LoRA", 380, 833600, 39 * kGB},
          {"IISAN-cached", 22, 4113877, 3 * kGB}};
}

TEST(TpmeTest, WorkedExampleMatchesTheFormula) {
  const auto scores = Tpme(WorkedExample());
  ASSERT_EQ(scores.size(), 4u);
  // min T = 22, max T = 443; min P = 833,600 (LoRA), max P = 194,897,216; min M = 3, max M = 47.
  const double time_range = 443.0 - 22.0;
  const double parameter_range = 194897216.0 - 833600.0;
  const double memory_range = 47.0 - 3.0;
  const double adapter = 0.45 * (350.0 - 22.0) / time_range +
                         0.1 * (4965440.0 - 833600.0) / parameter_range +
                         0.45 * (37.0 - 3.0) / memory_range;
  const double lora = 0.45 * (380.0 - 22.0) / time_range + 0.1 * 0.0 + 0.45 * (39.0 - 3.0) / memory_range;
  const double iisan = 0.45 * 0.0 + 0.1 * (4113877.0 - 833600.0) / parameter_range + 0.45 * 0.0;
  EXPECT_NEAR(scores[0], 1.0, 1e-12);
  EXPECT_NEAR(scores[1], adapter, 1e-12);
  EXPECT_NEAR(scores[2], lora, 1e-12);
  EXPECT_NEAR(scores[3], iisan, 1e-12);
}

TEST(TpmeTest, WorkedExampleMatchesTheRoundedValuesOfTheNotes) {
  const auto scores = Tpme(WorkedExample());
  EXPECT_NEAR(scores[0], 1.000, 1e-3);
  EXPECT_NEAR(scores[1], 0.701, 1e-3);
  EXPECT_NEAR(scores[2], 0.751, 1e-3);
  EXPECT_NEAR(scores[3], 0.0017, 1e-3);
  EXPECT_NEAR(scores[3], 0.0017, 1e-4);  // p_norm = 0.0169, t_norm = m_norm = 0
}

TEST(TpmeTest, ScoresDoNotDependOnUnits) {
  auto inputs = WorkedExample();
  for (auto& input : inputs) {
    input.train_seconds_per_epoch /= 60.0;
    input.peak_memory_bytes /= 1024.0;
  }
  const auto scaled = Tpme(inputs);
  const auto original = Tpme(WorkedExample());
  for (size_t i = 0; i < original.size(); ++i) EXPECT_NEAR(scaled[i], original[i], 1e-12) << inputs[i].label;
}

TEST(TpmeTest, AxisWithoutSpreadContributesZero) {
  // Same memory everywhere: only time (0.45) and parameters (0.1) can score.
  const std::vector<EfficiencyInput> inputs = {{"a", 10, 100, 5e9}, {"b", 20, 300, 5e9}, {"c", 15, 200, 5e9}};
  const auto scores = Tpme(inputs);
  EXPECT_NEAR(scores[0], 0.0, 1e-12);
  EXPECT_NEAR(scores[1], 0.55, 1e-12);
  EXPECT_NEAR(scores[2], 0.45 * 0.5 + 0.1 * 0.5, 1e-12);
}

TEST(TpmeTest, SingleInputAndIdenticalInputsScoreZero) {
  EXPECT_EQ(Tpme({{"only", 10, 100, 1e9}}), std::vector<double>{0.0});
  EXPECT_EQ(Tpme({{"a", 10, 100, 1e9}, {"b", 10, 100, 1e9}}), (std::vector<double>{0.0, 0.0}));
}

TEST(TpmeTest, EmptyInputGivesEmptyOutput) { EXPECT_TRUE(Tpme({}).empty()); }

TEST(TpmeTest, CustomWeightsApply) {
  const auto scores = Tpme(WorkedExample(), TpmeWeights{0.0, 1.0, 0.0});
  EXPECT_NEAR(scores[2], 0.0, 1e-12);  // LoRA has the fewest trainable parameters
  EXPECT_NEAR(scores[3], (4113877.0 - 833600.0) / (194897216.0 - 833600.0), 1e-12);
}

TEST(TpmeTest, BadWeightsThrow) {
  EXPECT_THROW(Tpme(WorkedExample(), TpmeWeights{0.5, 0.5, 0.5}), std::invalid_argument);
  EXPECT_THROW(Tpme(WorkedExample(), TpmeWeights{0.45, 0.1, 0.44}), std::invalid_argument);
  EXPECT_THROW(Tpme(WorkedExample(), TpmeWeights{1.2, -0.2, 0.0}), std::invalid_argument);
  EXPECT_THROW(Tpme({}, TpmeWeights{0.5, 0.5, 0.5}), std::invalid_argument);
  EXPECT_NO_THROW(Tpme(WorkedExample(), TpmeWeights{0.45, 0.1, 0.45 + 5e-10}));
}

TEST(TpmeTest, NegativeOrNonFiniteValueNamesTheEntry) {
  auto inputs = WorkedExample();
  inputs[1].peak_memory_bytes = -1.0;
  try {
    Tpme(inputs);
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& error) {
    EXPECT_NE(std::string(error.what()).find("Adapter"), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find("peak_memory_bytes"), std::string::npos) << error.what();
  }
}

}  // namespace
}  // namespace iisan::train
