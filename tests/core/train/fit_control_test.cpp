// Training as a library call: a cancel between steps leaves a state that resumes mid-epoch to the
// uninterrupted run's result bit for bit; on_epoch can stop a run; a diverged run stops with an
// error naming the epoch and its first non-finite step; summaries and metrics lines go to JSON
// and back through their types.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/models/param_count.h"
#include "core/train/checkpoint.h"
#include "core/train/run_summary.h"
#include "core/train/trainer.h"
#include "tests/core/train/walk_problem.h"

namespace iisan::train {
namespace {

using testing::Problem;

std::vector<torch::Tensor> Weights(Recommender& model) {
  std::vector<torch::Tensor> out;
  for (const auto& p : models::TrainableParameters(*model)) out.push_back(p.detach().clone());
  return out;
}

void ExpectSameWeights(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i], b[i])) << "parameter " << i;
}

TEST(FitControlTest, CancelMidEpochThenResumeEqualsAnUninterruptedRun) {
  const Problem setup;
  auto whole_model = setup.Model();
  Trainer whole(setup.dataset, whole_model, setup.options);
  std::vector<double> whole_losses;
  const auto expected = whole.Fit([&](const EpochRecord& r) { whole_losses.push_back(r.train_loss); });
  EXPECT_EQ(expected.status, RunStatus::kCompleted);

  // Cancelled after step 3 of epoch 2 (of 6): the step in flight finishes, then Fit returns.
  auto first_model = setup.Model();
  Trainer first(setup.dataset, first_model, setup.options);
  std::atomic<bool> cancel{false};
  FitCallbacks callbacks;
  callbacks.cancel = &cancel;
  std::vector<double> losses;
  callbacks.on_epoch = [&](const EpochRecord& r) {
    losses.push_back(r.train_loss);
    return EpochDecision::kContinue;
  };
  int64_t steps_seen = 0;
  callbacks.after_step = [&](int epoch, int64_t done) {
    ++steps_seen;
    if (epoch == 2 && done == 3) cancel = true;
  };
  const auto cancelled = first.Fit(callbacks);
  EXPECT_EQ(cancelled.status, RunStatus::kCancelled);
  EXPECT_EQ(cancelled.epochs_run, 1);
  EXPECT_EQ(steps_seen, 6 + 3);
  const auto state = first.Checkpoint();
  EXPECT_EQ(state.state.at("epoch_in_flight").get<int>(), 2);
  EXPECT_EQ(state.state.at("next_step").get<int64_t>(), 3);
  const auto saved = TrainableTensors(first_model);

  // A new process: other initial weights and generator states, then the checkpoint.
  auto second_model = setup.Model(/*init_seed=*/99);
  torch::manual_seed(1234);
  Trainer second(setup.dataset, second_model, setup.options);
  {
    torch::NoGradGuard no_grad;
    auto params = models::NamedTrainableParameters(*second_model);
    ASSERT_EQ(params.size(), saved.size());
    for (size_t i = 0; i < params.size(); ++i) params[i].second.copy_(saved[i].second);
  }
  second.Resume(state);
  const auto resumed = second.Fit([&](const EpochRecord& r) { losses.push_back(r.train_loss); });
  EXPECT_EQ(resumed.status, RunStatus::kCompleted);
  EXPECT_EQ(losses, whole_losses);
  EXPECT_EQ(resumed.best_epoch, expected.best_epoch);
  EXPECT_EQ(resumed.test.hit_sum, expected.test.hit_sum);
  EXPECT_EQ(resumed.test.ndcg_sum, expected.test.ndcg_sum);
  ExpectSameWeights(Weights(second_model), Weights(whole_model));
}

TEST(FitControlTest, ACancelBetweenEpochsResumesAtTheNextEpoch) {
  const Problem setup;
  auto model = setup.Model();
  Trainer trainer(setup.dataset, model, setup.options);
  std::atomic<bool> cancel{false};
  FitCallbacks callbacks;
  callbacks.cancel = &cancel;
  callbacks.on_epoch = [&](const EpochRecord& r) {
    if (r.epoch == 1) cancel = true;  // raised during evaluation: seen before epoch 2's first step
    return EpochDecision::kContinue;
  };
  const auto result = trainer.Fit(callbacks);
  EXPECT_EQ(result.status, RunStatus::kCancelled);
  EXPECT_EQ(result.epochs_run, 1);
  const auto state = trainer.Checkpoint();
  EXPECT_EQ(state.state.at("epoch_in_flight").get<int>(), 0);
  EXPECT_EQ(state.state.at("next_step").get<int64_t>(), 0);
  auto again = setup.Model();
  Trainer resumed(setup.dataset, again, setup.options);
  EXPECT_NO_THROW(resumed.Resume(state));
  EXPECT_EQ(resumed.epochs_done(), 1);
}

TEST(FitControlTest, ACheckpointWhoseStepLiesOutsideTheEpochIsRefused) {
  const Problem setup;
  auto model = setup.Model();
  Trainer trainer(setup.dataset, model, setup.options);
  std::atomic<bool> cancel{false};
  FitCallbacks callbacks;
  callbacks.cancel = &cancel;
  callbacks.after_step = [&](int epoch, int64_t done) { cancel = epoch == 1 && done == 2; };
  trainer.Fit(callbacks);
  auto state = trainer.Checkpoint();
  ASSERT_EQ(state.state.at("next_step").get<int64_t>(), 2);
  state.state["next_step"] = 6;  // an epoch of 45 users in batches of 8 has steps 0..5
  auto again = setup.Model();
  Trainer resumed(setup.dataset, again, setup.options);
  try {
    resumed.Resume(state);
    FAIL() << "resumed at step 6 of a 6-step epoch";
  } catch (const std::runtime_error& error) {
    EXPECT_NE(std::string(error.what()).find("next step 6 of 6"), std::string::npos) << error.what();
  }
}

TEST(FitControlTest, OnEpochCanStopTheRun) {
  const Problem setup;
  auto model = setup.Model();
  Trainer trainer(setup.dataset, model, setup.options);
  FitCallbacks callbacks;
  int seen = 0;
  callbacks.on_epoch = [&](const EpochRecord& r) {
    ++seen;
    return r.epoch == 2 ? EpochDecision::kStop : EpochDecision::kContinue;
  };
  const auto result = trainer.Fit(callbacks);
  EXPECT_EQ(result.status, RunStatus::kStopped);
  EXPECT_EQ(result.epochs_run, 2);
  EXPECT_EQ(seen, 2);
}

// Fit's error, or "" when it returns.
std::string FitError(Trainer& trainer, int& epochs_reported) {
  try {
    trainer.Fit([&](const EpochRecord&) { ++epochs_reported; });
  } catch (const std::runtime_error& error) {
    return error.what();
  }
  return "";
}

TEST(FitControlTest, ADivergedRunStopsNamingTheEpochAndStep) {
  Problem setup;
  setup.options.lr = {1e30, 1e30, 1e30, 1e30, 1e30};
  auto model = setup.Model();
  Trainer trainer(setup.dataset, model, setup.options);
  int epochs_reported = 0;
  const std::string error = FitError(trainer, epochs_reported);
  ASSERT_FALSE(error.empty()) << "a learning rate of 1e30 must diverge";
  EXPECT_NE(error.find("epoch 1: the training loss is not finite"), std::string::npos) << error;
  // The first step's loss comes from the initial weights: a later step is the first non-finite.
  const auto at = error.find("; first at step ");
  ASSERT_NE(at, std::string::npos) << error;
  const int step = std::stoi(error.substr(at + 16));
  EXPECT_GE(step, 2) << error;
  EXPECT_LE(step, 6) << error;
  EXPECT_NE(error.find(" of 6)"), std::string::npos) << error;
  EXPECT_NE(error.find("Lower the learning rate (train.lr.*)"), std::string::npos) << error;
  EXPECT_EQ(epochs_reported, 0) << "no epoch of the divergence is reported";
}

TEST(FitControlTest, TheErrorNamesTheFirstStepWhoseLossWasNotFinite) {
  // Item X's cached states are NaN: the first batch with a user who trains on X has a NaN loss
  // (and NaN weights after it), every batch before it a finite one. X is the item whose first
  // batch in epoch 1's user order comes latest.
  Problem setup;
  const auto order = SeededPermutation(setup.dataset.num_users(), setup.options.seed + 1);
  const int64_t batch = setup.options.batch_size, steps = (setup.dataset.num_users() + batch - 1) / batch;
  std::vector<int64_t> first_step(31, -1);
  for (int64_t position = setup.dataset.num_users() - 1; position >= 0; --position) {
    for (const int32_t item : setup.dataset.train_sequence(order[position])) first_step[item] = position / batch;
  }
  const int item = static_cast<int>(std::max_element(first_step.begin(), first_step.end()) - first_step.begin());
  ASSERT_GT(first_step[item], 0) << "every item is met by the first step; the test needs a later one";

  auto model = setup.Model(1, item);
  Trainer trainer(setup.dataset, model, setup.options);
  int epochs_reported = 0;
  const std::string error = FitError(trainer, epochs_reported);
  EXPECT_NE(error.find("epoch 1: the training loss is not finite ("), std::string::npos) << error;
  const std::string where =
      "; first at step " + std::to_string(first_step[item] + 1) + " of " + std::to_string(steps) + ")";
  EXPECT_NE(error.find(where), std::string::npos) << "expected \"" << where << "\" in: " << error;
  EXPECT_EQ(epochs_reported, 0);
}

TEST(EpochLossTest, RecordsTheSumAndTheFirstNonFiniteStep) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  EpochLoss loss(torch::kCPU);
  loss.Begin(0);
  for (const float value : {1.0f, 2.0f}) loss.Add(torch::tensor(value));
  EXPECT_EQ(loss.sum().item<float>(), 3.0f);
  EXPECT_EQ(loss.FirstNonFiniteStep(), -1);
  for (const float value : {inf, nan, 4.0f}) loss.Add(torch::tensor(value));
  EXPECT_FALSE(std::isfinite(loss.sum().item<float>()));
  EXPECT_EQ(loss.FirstNonFiniteStep(), 2) << "the first non-finite step is kept";

  // A checkpoint mid-epoch and its continuation: steps are numbered from the epoch's start.
  const auto sum = loss.SumState(), first = loss.FirstNonFiniteState();
  EpochLoss resumed(torch::kCPU);
  resumed.Restore(torch::tensor({3.0f}), torch::tensor({int64_t{-1}}));
  resumed.Begin(2);
  resumed.Add(torch::tensor(1.0f));
  resumed.Add(torch::tensor(nan));
  EXPECT_EQ(resumed.FirstNonFiniteStep(), 3);
  resumed.Restore(sum, first);
  resumed.Begin(5);
  resumed.Add(torch::tensor(nan));
  EXPECT_EQ(resumed.FirstNonFiniteStep(), 2);
  // A checkpoint written before the record existed: none.
  resumed.Restore(torch::tensor({1.0f}), torch::Tensor());
  EXPECT_EQ(resumed.FirstNonFiniteStep(), -1);
  EXPECT_EQ(resumed.sum().item<float>(), 1.0f);

  // A new epoch starts afresh.
  loss.Begin(0);
  loss.Add(torch::tensor(5.0f));
  EXPECT_EQ(loss.sum().item<float>(), 5.0f);
  EXPECT_EQ(loss.FirstNonFiniteStep(), -1);
}

TEST(RunSummaryTest, RoundTripsThroughJson) {
  RunSummary summary;
  summary.name = "r";
  summary.method = "iisan";
  summary.method_label = "IISAN (cached)";
  summary.modality = "text";
  summary.device = "cpu";
  summary.status = RunStatusName(RunStatus::kEarlyStopped);
  summary.batch_size = 64;
  summary.best_epoch = 3;
  summary.epochs_run = 5;
  summary.test = RankingMetrics({5, 10});
  summary.test.hit_sum = {3, 7};
  summary.test.ndcg_sum = {1.5, 2.25};
  summary.test.users = 20;
  summary.valid = summary.test;
  summary.popularity_test = summary.test;
  summary.trainable_parameters = 4113877;
  summary.world_size = 2;
  summary.train_seconds_per_epoch = 0.82;
  summary.eval_seconds_per_epoch = 0.36;
  summary.train_steps_per_epoch = 189;
  summary.train_steps_measured = 945;
  summary.peak_memory_bytes = 719323136;
  summary.peak_memory_kind = "cuda allocator peak";
  summary.gpu_utilization = 0.75;
  summary.startup_seconds = 1.5;
  summary.startup_phases = {{"libraries", 0.25}, {"dataset", 0.5}, {"first step", 0.75}};
  summary.memory_phases = {{"resident", 440401920}, {"train_peak", 719323136}, {"eval_peak", 536870912}};
  summary.cache_path = "cache/k.h5";
  summary.cache_fingerprint = "k";
  summary.checkpoint = "runs/r/checkpoints/best.safetensors";
  const auto json = summary.ToJson();
  const auto back = RunSummary::FromJson(json, "summary.json");
  EXPECT_EQ(back.ToJson(), json);
  EXPECT_EQ(back.test.hit_sum, summary.test.hit_sum);
  EXPECT_EQ(back.status, "early_stopped");
  EXPECT_EQ(back.startup_seconds, 1.5);
  EXPECT_EQ(back.startup_phases, summary.startup_phases) << "the phases keep their order";
  EXPECT_EQ(back.memory_phases, summary.memory_phases);
  EXPECT_EQ(json["memory_phases"]["train_peak"], 719323136);
  summary.memory_phases.clear();  // a CPU run: no phases, no field
  EXPECT_FALSE(summary.ToJson().contains("memory_phases"));
}

TEST(RunSummaryTest, OlderFormatIsReadNewerAndBrokenAreRefusedByField) {
  nlohmann::ordered_json old = {{"method", "fft"},           {"name", "x"},
                                {"trainable_parameters", 5}, {"train_seconds_per_epoch", 2.0},
                                {"eval_seconds_per_epoch", 1.0}, {"peak_memory_bytes", 1024},
                                {"peak_memory_kind", "host RSS"}, {"device", "cpu"}};
  EXPECT_EQ(RunSummary::FromJson(old, "s.json").status, "completed");
  auto expect_error = [](nlohmann::ordered_json json, const std::string& part) {
    try {
      RunSummary::FromJson(json, "s.json");
      ADD_FAILURE() << "expected an error containing " << part;
    } catch (const std::runtime_error& error) {
      EXPECT_NE(std::string(error.what()).find(part), std::string::npos) << error.what();
      EXPECT_NE(std::string(error.what()).find("s.json"), std::string::npos) << error.what();
    }
  };
  auto newer = old;
  newer["format_version"] = RunSummary::kFormatVersion + 1;
  expect_error(newer, "format_version");
  auto bad_status = old;
  bad_status["status"] = "exploded";
  expect_error(bad_status, "\"status\"");
  auto bad_metric = old;
  bad_metric["test"] = {{"HR@10", 1.5}, {"NDCG@10", 0.1}, {"users", 3}};
  expect_error(bad_metric, "test.HR@10");
  auto missing = old;
  missing.erase("device");
  expect_error(missing, "\"device\"");
  auto negative = old;
  negative["trainable_parameters"] = -1;
  expect_error(negative, "trainable_parameters");
  auto startup = old;
  startup["startup_seconds"] = -0.5;
  expect_error(startup, "startup_seconds");
  startup["startup_seconds"] = 0.5;
  startup["startup_phases"] = {{"dataset", "fast"}};
  expect_error(startup, "startup_phases.dataset");
  auto memory = old;
  memory["memory_phases"] = {{"resident", 1024}, {"eval_peak", -5}};
  expect_error(memory, "memory_phases.eval_peak");
  memory["memory_phases"] = {{"resident", 0.5}};
  expect_error(memory, "memory_phases.resident");
}

TEST(RunSummaryTest, EpochRecordRoundTrips) {
  EpochRecord record;
  record.epoch = 4;
  record.train_loss = 3.25;
  record.train_steps = 10;
  record.full_epoch_steps = 12;
  record.gpu_utilization = 0.5;
  record.valid = RankingMetrics({10});
  record.valid.hit_sum = {4};
  record.valid.ndcg_sum = {1.75};
  record.valid.users = 16;
  record.test = record.valid;
  record.best = true;
  const auto json = record.ToJson();
  EXPECT_EQ(EpochRecord::FromJson(json, "metrics.jsonl:4").ToJson(), json);
  auto broken = json;
  broken["epoch"] = 0;
  EXPECT_THROW(EpochRecord::FromJson(broken, "metrics.jsonl:4"), std::runtime_error);
}

}  // namespace
}  // namespace iisan::train
