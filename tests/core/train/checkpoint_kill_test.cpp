// The resumable checkpoint (SaveResumable) under SIGKILL, as the atomic writer's kill test does
// for single files: a child process trains one step at a time and writes checkpoints/last after
// each, continuing from the checkpoint its killed predecessor left, as a requeued job does. It is
// killed right after each step of the write (kEnvCheckpointKillAtStep), for every ordered pair of
// steps of two successive kills, and at seeded random moments. After every kill the checkpoint
// that FindResumable picks loads, and is exactly one of the states an uninterrupted run passes
// through, never older than one picked before; last.tmp is never trusted.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <random>
#include <thread>

#include <glog/logging.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/data/json_input.h"
#include "core/data/text_file.h"
#include "core/models/param_count.h"
#include "core/train/checkpoint.h"
#include "core/train/device_stats.h"
#include "tests/core/train/walk_problem.h"

namespace iisan::train {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// One training step (after an epoch's last step, also the epoch's evaluation): Fit returns at
// the next check of the cancel flag, which the step raised.
void Advance(Trainer& trainer) {
  std::atomic<bool> cancel{false};
  FitCallbacks callbacks;
  callbacks.cancel = &cancel;
  callbacks.after_step = [&](int, int64_t) { cancel = true; };
  trainer.Fit(callbacks);
}

// Where a run stands: epochs done, and the next step of the epoch in flight. Every Advance
// increases it.
using Position = std::pair<int, int64_t>;

Position PositionOf(const nlohmann::ordered_json& state) {
  return {state.at("epochs_done").get<int>(), state.at("next_step").get<int64_t>()};
}

std::string Describe(const Position& position) {
  return "epoch " + std::to_string(position.first) + " done, next step " + std::to_string(position.second);
}

// The model and trainer of the problem, as a fresh process makes them; epochs enough never to end.
struct WalkRun {
  testing::Problem problem;
  Recommender model;
  std::unique_ptr<Trainer> trainer;
  WalkRun() : model(problem.Model()) {
    problem.options.epochs = 100000;
    trainer = std::make_unique<Trainer>(problem.dataset, model, problem.options);
  }
};

// The child: resumes from the checkpoint, if any, then trains a step and saves, forever; until it
// is killed, by the parent or by itself at step `kill_at_step` of a save.
[[noreturn]] void WriteCheckpointsForever(const fs::path& dir, int kill_at_step) {
  if (kill_at_step > 0) ::setenv(kEnvCheckpointKillAtStep, std::to_string(kill_at_step).c_str(), 1);
  try {
    WalkRun run;
    if (HasResumable(dir)) ResumeFrom(FindResumable(dir), run.model, *run.trainer);
    while (true) {
      Advance(*run.trainer);
      SaveResumable(dir, run.model, *run.trainer);
    }
  } catch (const std::exception& error) {
    std::fprintf(stderr, "checkpoint writer failed: %s\n", error.what());
  }
  ::_exit(3);
}

// The uninterrupted run, advanced on demand to the positions that checkpoints claim. It keeps
// its own generator state: loading checkpoints in between resets the process's generator.
class Reference {
 public:
  Reference() : generator_(GeneratorState(torch::kCPU)) {}

  // Advances to `position`; false when the run steps over it (no such state is ever written).
  bool AdvanceTo(const Position& position) {
    SetGeneratorState(torch::kCPU, generator_);
    while (position_ < position) {
      Advance(*run_.trainer);
      position_ = PositionOf(run_.trainer->Checkpoint().state);
    }
    generator_ = GeneratorState(torch::kCPU);
    return position_ == position;
  }
  WalkRun& run() { return run_; }

 private:
  WalkRun run_;
  torch::Tensor generator_;
  Position position_{0, 0};
};

class CheckpointKillTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // The children are forked from this process: no intra-op threads that fork would lose.
    torch::set_num_threads(1);
    saved_level_ = FLAGS_minloglevel;
    FLAGS_minloglevel = google::GLOG_WARNING;
    dir_ = fs::path(::testing::TempDir()) /
           ("checkpoint_kill_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    data::RemoveTree(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    FLAGS_minloglevel = saved_level_;
    data::RemoveTree(dir_);
  }

  pid_t StartWriter(int kill_at_step) {
    const pid_t child = ::fork();
    if (child == 0) WriteCheckpointsForever(dir_, kill_at_step);
    return child;
  }

  // Waits for the writer to die of SIGKILL; kills it after `patience` (and fails) otherwise.
  void ExpectKilled(pid_t child, const std::string& round, std::chrono::seconds patience = std::chrono::seconds(120)) {
    int status = 0;
    const auto deadline = Clock::now() + patience;
    while (::waitpid(child, &status, WNOHANG) == 0) {
      if (Clock::now() > deadline) {
        ::kill(child, SIGKILL);
        ::waitpid(child, &status, 0);
        FAIL() << round << ": the writer did not reach its kill step";
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        << round << ": the writer ended by itself (status " << status << "), see its message above";
  }

  // What a resumed run would load: FindResumable's folder, loaded into a fresh run, must be the
  // reference's state at its position, bit for bit, and not older than the one seen before.
  void ExpectOneOfTheStatesWritten(const std::string& round) {
    SCOPED_TRACE(round);
    if (!HasResumable(dir_)) {
      ASSERT_FALSE(complete_seen_) << "a kill lost every checkpoint, after one had been complete";
      ASSERT_THROW(FindResumable(dir_), std::runtime_error);
      return;
    }
    const fs::path picked = FindResumable(dir_);
    ASSERT_TRUE(picked.filename() == "last" || picked.filename() == "last.old") << picked;
    WalkRun loaded;
    ResumeFrom(picked, loaded.model, *loaded.trainer);
    const auto state = loaded.trainer->Checkpoint();
    const Position position = PositionOf(state.state);
    ASSERT_GE(position, seen_) << "the checkpoint went back from " << Describe(seen_) << " to " << Describe(position);
    ASSERT_TRUE(reference_.AdvanceTo(position)) << Describe(position) << " is no state of the uninterrupted run";
    const auto expected_weights = TrainableTensors(reference_.run().model);
    const auto weights = TrainableTensors(loaded.model);
    ASSERT_EQ(weights.size(), expected_weights.size());
    for (size_t i = 0; i < weights.size(); ++i) {
      EXPECT_TRUE(torch::equal(weights[i].second, expected_weights[i].second))
          << weights[i].first << " at " << Describe(position);
    }
    // Optimizer moments and step, generator state, the running loss: what an exact resume needs.
    const auto expected = reference_.run().trainer->Checkpoint();
    ASSERT_EQ(state.tensors.size(), expected.tensors.size());
    for (size_t i = 0; i < state.tensors.size(); ++i) {
      EXPECT_EQ(state.tensors[i].first, expected.tensors[i].first);
      // Between epochs the running loss is not state: the next epoch starts it from zero.
      if (state.tensors[i].first == "trainer.loss_sum" && position.second == 0) continue;
      EXPECT_TRUE(torch::equal(state.tensors[i].second, expected.tensors[i].second))
          << state.tensors[i].first << " at " << Describe(position);
    }
    seen_ = position;
    complete_seen_ = true;
  }

  // The position of the checkpoint on disk while a writer runs, if one can be read right now.
  std::optional<Position> PositionOnDisk() const {
    try {
      return PositionOf(data::ReadJsonFile<nlohmann::ordered_json>(FindResumable(dir_) / "trainer.json"));
    } catch (const std::exception&) {
      return std::nullopt;  // none yet, or renamed while it was read
    }
  }

  fs::path dir_;
  Reference reference_;
  Position seen_{0, 0};
  bool complete_seen_ = false;
  int saved_level_ = 0;
};

constexpr int kSaveSteps = 7;  // kEnvCheckpointKillAtStep's steps

// A kill at step p of one save, then the next writer's kill at step q, for every p and q: the
// states a kill can leave (last.tmp half written or complete, last.old alone or beside last)
// each followed by every step of the next save.
TEST_F(CheckpointKillTest, AKillAfterAnyStepOfTwoSuccessiveSavesLeavesOneOfTheStatesWritten) {
  for (int first = 1; first <= kSaveSteps; ++first) {
    for (int second = 1; second <= kSaveSteps; ++second) {
      for (const int step : {first, second}) {
        const std::string round = "kills at steps " + std::to_string(first) + " then " + std::to_string(second) +
                                  " (now " + std::to_string(step) + ")";
        ExpectKilled(StartWriter(step), round);
        ExpectOneOfTheStatesWritten(round);
        if (HasFatalFailure()) return;
      }
    }
  }
  EXPECT_TRUE(complete_seen_);
  EXPECT_GT(seen_, (Position{0, 5})) << "the writers made no progress across the kills";
}

// SIGKILL at seeded random moments while the writer saves after every step.
TEST_F(CheckpointKillTest, KillNineAtRandomMomentsLeavesOneOfTheStatesWritten) {
  std::mt19937 random(20261201);
  std::uniform_int_distribution<int> delay_us(0, 40000);
  for (int round = 1; round <= 20; ++round) {
    const std::string name = "random kill " + std::to_string(round);
    const Position before = seen_;
    const pid_t child = StartWriter(0);
    // Once the writer has saved a state past the last one seen, let it run a random while longer.
    const auto deadline = Clock::now() + std::chrono::seconds(120);
    bool progressed = false;
    while (!progressed && Clock::now() < deadline) {
      progressed = PositionOnDisk().value_or(before) > before;
      if (!progressed) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(delay_us(random)));
    ::kill(child, SIGKILL);
    ExpectKilled(child, name);
    ASSERT_TRUE(progressed) << name << ": the writer saved nothing new in 120 s";
    ExpectOneOfTheStatesWritten(name);
    if (HasFatalFailure()) return;
  }
}

}  // namespace
}  // namespace iisan::train
