// train.profile_steps as a library call: a window of training steps past the warm-up and the
// evaluation pass after it are profiled once, with Kineto, without changing what the run computes;
// the window ends with its epoch, a cancel inside it drops it, and an epoch too short to hold it
// is refused. The profiler itself: CPU ops by self time (nested ops counted once), one window at
// a time, and the files of profile/.
#include "core/train/kernel_profile.h"

#include <atomic>
#include <fstream>
#include <set>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "core/train/trainer.h"
#include "tests/core/train/walk_problem.h"

namespace iisan::train {
namespace {

using testing::Problem;

// The problem of walk_problem.h in batches of 2: 23 steps an epoch, evaluated in batches of 16
// (3 batches of 45 users).
Problem ManyStepProblem(int64_t profile_steps) {
  Problem setup;
  setup.options.batch_size = 2;
  setup.options.epochs = 2;
  setup.options.eval.batch_size = 16;
  setup.options.profile_steps = profile_steps;
  return setup;
}

const ProfiledKernel* Row(const KernelProfile& profile, const std::string& name) {
  for (const auto& row : profile.kernels) {
    if (row.name == name) return &row;
  }
  return nullptr;
}

// Autograd's backward nodes (MmBackward0, ...): what a training step runs and evaluation does not.
int64_t BackwardCalls(const KernelProfile& profile) {
  int64_t calls = 0;
  for (const auto& row : profile.kernels) {
    if (row.name.find("Backward") != std::string::npos) calls += row.calls;
  }
  return calls;
}

// What any CPU profile of `steps` steps of this model must show.
void ExpectPlausibleCpuProfile(const KernelProfile& profile, int64_t steps) {
  EXPECT_EQ(profile.device, "cpu");
  EXPECT_EQ(profile.activities, "cpu");
  EXPECT_FALSE(profile.on_device());
  EXPECT_EQ(profile.steps, steps);
  ASSERT_FALSE(profile.kernels.empty());
  double shares = 0.0, seconds = 0.0;
  int64_t calls = 0;
  for (size_t i = 0; i < profile.kernels.size(); ++i) {
    const auto& row = profile.kernels[i];
    EXPECT_EQ(row.kind, "cpu op") << row.name;
    EXPECT_GE(row.calls, 1) << row.name;
    EXPECT_GE(row.share, 0.0) << row.name;
    if (i > 0) {
      EXPECT_LE(row.total_seconds, profile.kernels[i - 1].total_seconds) << "out of order: " << row.name;
    }
    shares += row.share;
    seconds += row.total_seconds;
    calls += row.calls;
  }
  EXPECT_NEAR(shares, 1.0, 1e-9);
  EXPECT_NEAR(seconds, profile.kernel_seconds, 1e-9);
  EXPECT_EQ(profile.kernel_calls, calls);
  EXPECT_DOUBLE_EQ(profile.kernels_per_step(), static_cast<double>(calls) / static_cast<double>(steps));
  // Every step multiplies matrices: one of the matmul family is called at least once a step.
  int64_t matmul_calls = 0;
  for (const char* name : {"aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear"}) {
    if (const auto* row = Row(profile, name)) matmul_calls = std::max(matmul_calls, row->calls);
  }
  EXPECT_GE(matmul_calls, steps);
  // The ops' time lies inside the window.
  EXPECT_GT(profile.wall_seconds, 0.0);
  EXPECT_GT(profile.busy_seconds, 0.0);
  EXPECT_GT(profile.busy_fraction(), 0.0);
  EXPECT_LE(profile.busy_fraction(), 1.01);
}

TEST(KernelProfileTest, AWindowOfStepsThenTheEvaluationAfterItAreProfiledOnce) {
  const auto plain_setup = ManyStepProblem(0);
  auto plain_model = plain_setup.Model();
  Trainer plain(plain_setup.dataset, plain_model, plain_setup.options);
  std::vector<double> plain_losses;
  plain.Fit([&](const EpochRecord& r) { plain_losses.push_back(r.train_loss); });

  const auto setup = ManyStepProblem(4);
  auto model = setup.Model();
  Trainer trainer(setup.dataset, model, setup.options);
  std::vector<KernelProfile> profiles;
  std::vector<double> losses;
  FitCallbacks callbacks;
  callbacks.on_profile = [&](const KernelProfile& profile) { profiles.push_back(profile); };
  callbacks.on_epoch = [&](const EpochRecord& r) {
    losses.push_back(r.train_loss);
    EXPECT_EQ(profiles.size(), 2u) << "both profiles are handed on during epoch 1, none later";
    return EpochDecision::kContinue;
  };
  const auto result = trainer.Fit(callbacks);
  EXPECT_EQ(result.epochs_run, 2);
  EXPECT_EQ(losses, plain_losses) << "profiling changed what the run computes";

  ASSERT_EQ(profiles.size(), 2u);
  const auto& steps = profiles[0];
  EXPECT_EQ(steps.phase, "train_steps");
  EXPECT_EQ(steps.epoch, 1);
  EXPECT_EQ(steps.first_step, kProfileSkipSteps);
  EXPECT_EQ(steps.step_engine, "eager");
  EXPECT_EQ(steps.step_name, "training step");
  ExpectPlausibleCpuProfile(steps, 4);
  EXPECT_GT(BackwardCalls(steps), 0);

  const auto& eval = profiles[1];
  EXPECT_EQ(eval.phase, "eval");
  EXPECT_EQ(eval.epoch, 1);
  EXPECT_EQ(eval.step_engine, "eager");
  EXPECT_EQ(eval.step_name, "evaluation batch");
  ExpectPlausibleCpuProfile(eval, 3);
  EXPECT_EQ(BackwardCalls(eval), 0) << "the evaluation window holds a training step's work";
}

TEST(KernelProfileTest, TheWindowEndsWithItsEpochAndACancelInsideItDropsIt) {
  {
    auto setup = ManyStepProblem(100);
    setup.options.epochs = 1;
    auto model = setup.Model();
    Trainer trainer(setup.dataset, model, setup.options);
    std::vector<KernelProfile> profiles;
    FitCallbacks callbacks;
    callbacks.on_profile = [&](const KernelProfile& profile) { profiles.push_back(profile); };
    trainer.Fit(callbacks);
    ASSERT_EQ(profiles.size(), 2u);
    EXPECT_EQ(profiles[0].first_step, kProfileSkipSteps);
    EXPECT_EQ(profiles[0].steps, 23 - kProfileSkipSteps);
  }
  auto setup = ManyStepProblem(5);
  auto model = setup.Model();
  Trainer trainer(setup.dataset, model, setup.options);
  std::atomic<bool> cancel{false};
  int profiles = 0;
  FitCallbacks callbacks;
  callbacks.cancel = &cancel;
  callbacks.on_profile = [&](const KernelProfile&) { ++profiles; };
  callbacks.after_step = [&](int epoch, int64_t done) { cancel = epoch == 1 && done == kProfileSkipSteps + 2; };
  EXPECT_EQ(trainer.Fit(callbacks).status, RunStatus::kCancelled);
  EXPECT_EQ(profiles, 0);
  // The window was closed: another profiler can start on this thread.
  KernelProfiler next(torch::kCPU);
  EXPECT_NO_THROW(next.Start());
  EXPECT_NO_THROW(next.Stop());
}

std::string ConstructionError(const TrainOptions& options, const Problem& setup) {
  try {
    auto model = setup.Model();
    Trainer trainer(setup.dataset, model, options);
  } catch (const std::invalid_argument& error) {
    return error.what();
  }
  return "";
}

TEST(KernelProfileTest, AnEpochTooShortForTheWindowIsRefusedNamingTheKey) {
  Problem setup;  // batches of 8: 6 steps an epoch
  auto options = setup.options;
  options.profile_steps = 3;
  auto error = ConstructionError(options, setup);
  EXPECT_NE(error.find("train.profile_steps=3"), std::string::npos) << error;
  EXPECT_NE(error.find("an epoch has 6 steps (45 users, batch 8)"), std::string::npos) << error;
  EXPECT_NE(error.find("lower train.batch_size"), std::string::npos) << error;
  options.batch_size = 2;
  options.max_steps_per_epoch = kProfileSkipSteps;
  error = ConstructionError(options, setup);
  EXPECT_NE(error.find("or raise train.max_steps_per_epoch"), std::string::npos) << error;
  options.max_steps_per_epoch = kProfileSkipSteps + 1;
  EXPECT_EQ(ConstructionError(options, setup), "");
  EXPECT_NO_THROW(CheckProfileSteps(setup.options, 45)) << "profiling off needs no long epoch";
}

TEST(KernelProfilerTest, CpuOpsAreTimedBySelfTimeAndCountedPerCall) {
  const auto a = torch::randn({48, 48});
  KernelProfiler profiler(torch::kCPU);
  profiler.Start();
  EXPECT_THROW(profiler.Start(), std::logic_error);
  for (int i = 0; i < 7; ++i) torch::matmul(a, a);  // aten::matmul calls aten::mm
  auto profile = profiler.Stop();
  const auto* matmul = Row(profile, "aten::matmul");
  const auto* mm = Row(profile, "aten::mm");
  ASSERT_NE(matmul, nullptr);
  ASSERT_NE(mm, nullptr);
  EXPECT_EQ(matmul->calls, 7);
  EXPECT_EQ(mm->calls, 7);
  // Self times share out the time inside ops once: with inclusive times aten::matmul would hold
  // aten::mm's time again and the rows would add up to about twice that.
  EXPECT_NEAR(profile.kernel_seconds, profile.busy_seconds, 1e-9);
  EXPECT_GT(mm->total_seconds, 0.0);
  EXPECT_THROW(profiler.Stop(), std::logic_error);
}

TEST(KernelProfilerTest, OneWindowAtATimeAndAnAbandonedOneIsClosed) {
  KernelProfiler first(torch::kCPU), second(torch::kCPU);
  first.Start();
  try {
    second.Start();
    FAIL() << "two profilers recorded at once";
  } catch (const std::runtime_error& error) {
    EXPECT_NE(std::string(error.what()).find("another LibTorch profiler is active"), std::string::npos) << error.what();
  }
  first.Stop();
  {
    KernelProfiler abandoned(torch::kCPU);
    abandoned.Start();
  }
  EXPECT_NO_THROW(second.Start());
  EXPECT_NO_THROW(second.Stop());
}

TEST(KernelProfilerTest, TheFilesHoldEachProfileAndAReadableSummary) {
  const auto a = torch::randn({16, 16});
  std::vector<KernelProfile> profiles;
  for (const char* phase : {"train_steps", "eval"}) {
    KernelProfiler profiler(torch::kCPU);
    profiler.Start();
    for (int i = 0; i < 3; ++i) torch::mm(a, a);
    profiles.push_back(profiler.Stop());
    profiles.back().phase = phase;
    profiles.back().steps = 3;
    profiles.back().step_engine = "eager";
    profiles.back().step_name = "training step";
  }
  const auto dir = std::filesystem::path(::testing::TempDir()) / "kernel_profile_files" / "profile";
  std::filesystem::remove_all(dir.parent_path());
  WriteProfileFiles(dir, profiles);
  std::set<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) names.insert(entry.path().filename().string());
  EXPECT_EQ(names, (std::set<std::string>{"eval.json", "summary.txt", "train_steps.json"}));
  std::ifstream in(dir / "train_steps.json");
  const auto json = nlohmann::json::parse(in);
  EXPECT_EQ(json["phase"], "train_steps");
  EXPECT_EQ(json["steps"], 3);
  EXPECT_EQ(json["kernel_calls"], profiles[0].kernel_calls);
  double shares = 0.0;
  bool has_mm = false;
  for (const auto& row : json["kernels"]) {
    shares += row["share"].get<double>();
    if (row["name"] == "aten::mm") has_mm = row["calls"] == 3;
  }
  EXPECT_NEAR(shares, 1.0, 1e-9);
  EXPECT_TRUE(has_mm) << json.dump(2);
  std::ifstream summary_in(dir / "summary.txt");
  const std::string summary((std::istreambuf_iterator<char>(summary_in)), std::istreambuf_iterator<char>());
  EXPECT_NE(summary.find("== train_steps: 3 training steps"), std::string::npos) << summary;
  EXPECT_NE(summary.find("== eval: 3"), std::string::npos) << summary;
  EXPECT_NE(summary.find("aten::mm"), std::string::npos) << summary;
}

}  // namespace
}  // namespace iisan::train
