// `iisan sweep run` end to end on the synthetic dataset: a sweep whose ASHA prunes some trials,
// the same decisions and results serially and concurrently, a scheduler killed with SIGKILL and
// restarted, and a worker killed mid-trial whose trial is retried from its checkpoint.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "launcher/sweep/sweep_store.h"

namespace iisan::launcher::sweep {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

struct Result {
  int exit_code;
  std::string output;
};

Result RunIisan(const std::string& args) {
  const std::string command = std::string(IISAN_BINARY) + " " + args + " 2>&1";
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(command.c_str(), "r"), pclose);
  std::string output;
  std::array<char, 4096> buffer{};
  while (fgets(buffer.data(), buffer.size(), pipe.get())) output += buffer.data();
  const int status = pclose(pipe.release());
  return {WEXITSTATUS(status), output};
}

// `iisan ARGS` in the background, output to `log`.
pid_t StartIisan(const std::vector<std::string>& args, const fs::path& log) {
  const pid_t pid = fork();
  if (pid == 0) {
    std::freopen(log.c_str(), "a", stdout);
    dup2(fileno(stdout), 2);
    std::vector<char*> argv{const_cast<char*>(IISAN_BINARY)};
    for (const auto& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
    argv.push_back(nullptr);
    execv(IISAN_BINARY, argv.data());
    _exit(127);
  }
  return pid;
}

int WaitExit(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Synthetic data, the demo's small backbones and its cache, made once per test.
fs::path Workdir(const std::string& name) {
  const auto dir = fs::path(::testing::TempDir()) / ("sweep_e2e_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  EXPECT_EQ(RunIisan("data synth " + (dir / "data").string() + " --users 500 --items 200 --categories 6").exit_code, 0);
  const auto demo = RunIisan("demo --workdir " + dir.string() + " --set train.epochs=1");
  EXPECT_EQ(demo.exit_code, 0) << demo.output;
  return dir;
}

fs::path WriteSpec(const fs::path& work, const std::string& name, int concurrency, int trials, int max_epochs,
                   double heartbeat_timeout_s = 60) {
  nlohmann::json spec = nlohmann::json::parse(R"({
    "space": {"train.lr.recsys": {"loguniform": [1e-4, 1e-2]}, "model.dropout": {"uniform": [0.0, 0.3]}},
    "seed": 3,
    "early_stopping": {"rule": "asha", "reduction_factor": 2, "grace_period": 1}
  })");
  spec["name"] = name;
  spec["base"] = {{"data", {{"dir", (work / "data").string()}}},
                  {"model", {{"text_backbone", (work / "backbones/text").string()},
                             {"image_backbone", (work / "backbones/image").string()}}},
                  {"cache", {{"dir", (work / "cache").string()}}},
                  {"train", {{"batch_size", 64}, {"patience", 100}}}};
  spec["concurrency"] = concurrency;
  spec["trials"] = trials;
  spec["early_stopping"]["max_epochs"] = max_epochs;
  spec["heartbeat_timeout_s"] = heartbeat_timeout_s;
  const auto file = work / (name + ".json");
  std::ofstream(file) << spec.dump(2);
  return file;
}

std::vector<TrialRow> Trials(const fs::path& sweep_dir) { return SweepStore(sweep_dir / "sweep.db", true).Trials(); }

// Every trial's outcome as the sweep recorded it: status, epochs run, best metric and its epoch.
std::vector<std::string> Outcomes(const std::vector<TrialRow>& trials) {
  std::vector<std::string> out;
  for (const auto& row : trials) {
    out.push_back(std::to_string(row.id) + " " + TrialStatusName(row.status) + " epochs " + std::to_string(row.epochs) +
                  " best " + (row.best ? nlohmann::json(*row.best).dump() : "none") + " at " +
                  std::to_string(row.best_epoch) + " " + row.params.dump());
  }
  return out;
}

TEST(SweepEndToEndTest, AshaPrunesAndConcurrentEqualsSerial) {
  const auto work = Workdir("identity");
  const auto serial_spec = WriteSpec(work, "serial", 1, 8, 4);
  const auto concurrent_spec = WriteSpec(work, "concurrent", 3, 8, 4);
  auto serial = RunIisan("sweep run " + serial_spec.string() + " --dir " + (work / "serial").string());
  ASSERT_EQ(serial.exit_code, 0) << serial.output;
  auto concurrent = RunIisan("sweep run " + concurrent_spec.string() + " --dir " + (work / "concurrent").string());
  ASSERT_EQ(concurrent.exit_code, 0) << concurrent.output;
  EXPECT_NE(concurrent.output.find("3 worker process(es)"), std::string::npos) << concurrent.output;

  const auto a = Trials(work / "serial"), b = Trials(work / "concurrent");
  ASSERT_EQ(a.size(), 8u);
  EXPECT_EQ(Outcomes(a), Outcomes(b));
  int pruned = 0, completed = 0;
  for (const auto& row : a) {
    pruned += row.status == TrialStatus::kPruned;
    completed += row.status == TrialStatus::kCompleted;
    EXPECT_EQ(row.attempts, 1);
    // Every trial is an ordinary run directory.
    EXPECT_TRUE(fs::exists(fs::path(row.run_dir) / "summary.json")) << row.run_dir;
    EXPECT_TRUE(fs::exists(fs::path(row.run_dir) / "checkpoints/best.safetensors")) << row.run_dir;
  }
  EXPECT_GT(pruned, 0);
  EXPECT_GT(completed, 0);
  // The cache was built once (by the demo) and only loaded or reused by the sweep.
  EXPECT_NE(serial.output.find("caches: 0 built"), std::string::npos) << serial.output;

  // `iisan eval` works on a trial's run directory; the report writes its files.
  const auto eval = RunIisan("eval " + a[0].run_dir);
  EXPECT_EQ(eval.exit_code, 0) << eval.output;
  const auto report = RunIisan("sweep report " + (work / "serial").string());
  ASSERT_EQ(report.exit_code, 0) << report.output;
  for (const char* file : {"trials.md", "best_config.json", "best_so_far.svg", "metric_vs_train_lr_recsys.svg",
                           "metric_vs_model_dropout.svg"}) {
    EXPECT_TRUE(fs::exists(work / "serial" / "report" / file)) << file;
  }
  // The best config runs as it is.
  const auto best = nlohmann::json::parse(ReadFile(work / "serial" / "report" / "best_config.json"));
  EXPECT_EQ(best["train"]["epochs"], 4);
  // Rerunning a finished sweep does nothing more and reports the same.
  auto again = RunIisan("sweep run " + serial_spec.string() + " --dir " + (work / "serial").string());
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_EQ(Outcomes(Trials(work / "serial")), Outcomes(a));
}

// Waits until `ready` holds (polling the database), at most `seconds`.
template <typename Ready>
bool WaitFor(const fs::path& sweep_dir, Ready ready, int seconds = 120) {
  const auto deadline = Clock::now() + std::chrono::seconds(seconds);
  while (Clock::now() < deadline) {
    if (fs::exists(sweep_dir / "sweep.db")) {
      try {
        if (ready(Trials(sweep_dir))) return true;
      } catch (const std::exception&) {
        // the scheduler is creating the database
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

TEST(SweepEndToEndTest, SchedulerKilledAndRestartedLosesNoTrialAndRunsNoneTwice) {
  const auto work = Workdir("restart");
  const auto spec = WriteSpec(work, "restart", 2, 6, 3);
  const auto dir = work / "sweep";
  const pid_t scheduler = StartIisan({"sweep", "run", spec.string(), "--dir", dir.string()}, work / "first.log");
  // Kill it once some trial has finished and others are running.
  const bool midway = WaitFor(dir, [](const std::vector<TrialRow>& trials) {
    int done = 0, running = 0;
    for (const auto& row : trials) {
      done += IsTerminal(row.status);
      running += row.status == TrialStatus::kRunning;
    }
    return done >= 1 && running >= 1;
  });
  ASSERT_TRUE(midway) << ReadFile(work / "first.log");
  kill(scheduler, SIGKILL);
  WaitExit(scheduler);
  // Its workers live on, retrying the scheduler; the restarted one takes them back.
  auto second = RunIisan("sweep run " + spec.string() + " --dir " + dir.string());
  ASSERT_EQ(second.exit_code, 0) << second.output;
  const auto trials = Trials(dir);
  ASSERT_EQ(trials.size(), 6u);
  for (const auto& row : trials) {
    EXPECT_TRUE(IsTerminal(row.status)) << row.id;
    EXPECT_NE(row.status, TrialStatus::kFailed) << row.id << ": " << row.error;
    EXPECT_EQ(row.attempts, 1) << "trial " << row.id << " ran twice";
    // One metrics line per epoch run, none repeated.
    std::ifstream metrics(fs::path(row.run_dir) / "metrics.jsonl");
    int lines = 0;
    for (std::string line; std::getline(metrics, line);) {
      ++lines;
      EXPECT_EQ(nlohmann::json::parse(line)["epoch"], lines) << row.run_dir;
    }
    EXPECT_EQ(lines, row.epochs) << row.run_dir;
  }
  // The same outcomes as the sweep run in one go, one trial at a time.
  const auto reference_spec = WriteSpec(work, "restart", 1, 6, 3);
  auto reference = RunIisan("sweep run " + reference_spec.string() + " --executor inprocess --dir " +
                            (work / "reference").string());
  ASSERT_EQ(reference.exit_code, 0) << reference.output;
  EXPECT_EQ(Outcomes(trials), Outcomes(Trials(work / "reference")));
}

TEST(SweepEndToEndTest, DeadWorkersTrialIsRetriedFromItsCheckpoint) {
  const auto work = Workdir("dead_worker");
  const auto spec = WriteSpec(work, "dead", 2, 4, 4, /*heartbeat_timeout_s=*/5);
  const auto dir = work / "sweep";
  const pid_t scheduler = StartIisan({"sweep", "run", spec.string(), "--dir", dir.string()}, work / "run.log");
  // A running trial that has finished an epoch (so it has a checkpoint).
  std::string victim;
  int victim_trial = -1;
  const bool found = WaitFor(dir, [&](const std::vector<TrialRow>& trials) {
    for (const auto& row : trials) {
      if (row.status == TrialStatus::kRunning && row.epochs >= 1 && row.epochs < 3) {
        victim = row.worker;
        victim_trial = row.id;
        return true;
      }
    }
    return false;
  });
  ASSERT_TRUE(found) << ReadFile(work / "run.log");
  const std::string pkill = "pkill -KILL -f -- '" + dir.string() + " --name " + victim + "$'";
  ASSERT_EQ(std::system(pkill.c_str()), 0) << pkill;
  EXPECT_EQ(WaitExit(scheduler), 0) << ReadFile(work / "run.log");
  const auto trials = Trials(dir);
  ASSERT_EQ(trials.size(), 4u);
  const auto& retried = trials[static_cast<size_t>(victim_trial)];
  EXPECT_EQ(retried.attempts, 2);
  EXPECT_NE(retried.status, TrialStatus::kFailed) << retried.error;
  // It continued from its checkpoint: the run's log says so.
  bool continued = false;
  for (const auto& entry : fs::directory_iterator(fs::path(retried.run_dir) / "log")) {
    continued = continued || ReadFile(entry.path()).find("continuing") != std::string::npos;
  }
  EXPECT_TRUE(continued) << "trial " << victim_trial << " restarted from scratch";
  // And ended exactly as an uninterrupted sweep does.
  const auto reference_spec = WriteSpec(work, "dead", 1, 4, 4, 5);
  auto reference = RunIisan("sweep run " + reference_spec.string() + " --executor inprocess --dir " +
                            (work / "reference").string());
  ASSERT_EQ(reference.exit_code, 0) << reference.output;
  EXPECT_EQ(Outcomes(trials), Outcomes(Trials(work / "reference")));
}

}  // namespace
}  // namespace iisan::launcher::sweep
