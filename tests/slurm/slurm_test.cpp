// Slurm for real: training jobs submitted with sbatch to a one-node cluster that the suite
// starts itself (local_slurm.h): a 2-task `srun --mpi=pmix` job that reproduces mpirun's and
// one process's run, a job preempted mid-epoch by SIGUSR2 that requeues itself and ends as the
// uninterrupted run, a 3-task array capped at 2 at a time, a sweep whose workers are an array,
// and a rendezvous that cannot resolve
// failing fast and naming the variable.
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <regex>
#include <set>
#include <string>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "core/data/text_file.h"
#include "core/models/safetensors.h"
#include "tests/slurm/local_slurm.h"

namespace iisan::testing {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::string ReadText(const fs::path& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

nlohmann::json ReadJson(const fs::path& path) { return nlohmann::json::parse(ReadText(path)); }

class SlurmTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    work_ = new fs::path(fs::path(::testing::TempDir()) / "slurm_tests");
    data::RemoveTree(*work_);
    fs::create_directories(*work_);
    cluster_ = new LocalSlurm();
    const unsigned cores = std::max(2u, std::thread::hardware_concurrency());
    bool unavailable = false;
    const auto why = cluster_->Start(*work_ / "cluster", static_cast<int>(std::min(cores, 4u)), unavailable);
    if (!why.empty()) {
      *(unavailable ? skip_ : setup_error_) = "no local Slurm cluster: " + why;
      return;
    }
    // What `iisan demo` writes (data, small backbones, cache), once for every test.
    const std::string iisan = IISAN_BINARY;
    const auto data = *work_ / "demo/data";
    auto sh = RunShell(iisan + " data synth " + data.string() + " --users 600 --items 150 --categories 6");
    if (sh.exit_code == 0) {
      sh = RunShell("OMP_NUM_THREADS=1 " + iisan + " demo --workdir " + (*work_ / "demo").string() +
                    " --set train.epochs=1 --set name=demo");
    }
    if (sh.exit_code != 0) *setup_error_ = "iisan demo failed:\n" + sh.output;
  }

  static void TearDownTestSuite() {
    if (cluster_) cluster_->Stop();
    delete cluster_;
    cluster_ = nullptr;
  }

  void SetUp() override {
    if (!skip_->empty()) GTEST_SKIP() << *skip_;
    ASSERT_TRUE(setup_error_->empty()) << *setup_error_;
  }

  // `iisan train` arguments for the demo's data, backbones and cache.
  static std::string Train(const std::string& name, const std::string& more = "") {
    const auto demo = *work_ / "demo";
    return std::string(IISAN_BINARY) + " train --config " IISAN_SOURCE_DIR "/experiments/configs/demo.json" +
           " --set data.dir=" + (demo / "data").string() + " --set model.text_backbone=" +
           (demo / "backbones/text").string() + " --set model.image_backbone=" + (demo / "backbones/image").string() +
           " --set cache.dir=" + (demo / "cache").string() + " --set run_root=" + (*work_ / "runs").string() +
           " --set train.batch_size=16 --set name=" + name + " " + more;
  }

  // Submits `body` as a batch script with `directives` (#SBATCH lines); returns the job id.
  static std::string Submit(const std::string& name, const std::string& directives, const std::string& body) {
    const auto script = *work_ / (name + ".sbatch");
    std::ofstream(script) << "#!/bin/bash\n" << directives << "#SBATCH --output=" << (*work_ / name).string()
                          << "-%j.out\n#SBATCH --open-mode=append\nexport OMP_NUM_THREADS=1\n" << body << "\n";
    const auto sh = RunShell("sbatch --parsable " + script.string());
    EXPECT_EQ(sh.exit_code, 0) << sh.output;
    std::string id = sh.output.substr(0, sh.output.find_first_of(";\n"));
    return id;
  }

  // The job's state as scontrol reports it (COMPLETED, FAILED, PENDING, RUNNING, ...).
  static std::string State(const std::string& job) {
    const auto text = RunShell("scontrol show job " + job).output;
    std::smatch match;
    return std::regex_search(text, match, std::regex("JobState=([A-Z_]+)")) ? match[1].str() : "UNKNOWN";
  }

  // Polls until the job has left the queue or `seconds` pass; returns its final state.
  static std::string WaitFor(const std::string& job, int seconds) {
    const auto deadline = Clock::now() + std::chrono::seconds(seconds);
    while (Clock::now() < deadline) {
      if (RunShell("squeue -h -j " + job).output.empty()) return State(job);
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    return "TIMEOUT (" + State(job) + ")";
  }

  static std::string Output(const std::string& name, const std::string& job) {
    return ReadText(*work_ / (name + "-" + job + ".out"));
  }

  static double MaxDifference(const fs::path& a, const fs::path& b) {
    const models::SafetensorsReader left(a), right(b);
    EXPECT_EQ(left.names(), right.names());
    double worst = 0.0;
    for (const auto& name : left.names()) {
      if (!right.contains(name)) return 1e9;
      worst = std::max(worst, (left.Tensor(name) - right.Tensor(name)).abs().max().item<double>());
    }
    return worst;
  }

  // Waits for the run's first metrics line (the next epoch is then training), signals the job
  // with `scancel --signal=USR2 <scope> JOB`, waits until it has requeued itself and releases it
  // from the hold Slurm puts on requeued jobs (BeginTime).
  static void PreemptAfterFirstEpoch(const std::string& name, const std::string& job, const std::string& scope) {
    const auto metrics = Run(name) / "metrics.jsonl";
    const auto deadline = Clock::now() + std::chrono::seconds(120);
    while (Clock::now() < deadline && !(fs::exists(metrics) && fs::file_size(metrics) > 0)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ASSERT_TRUE(fs::exists(metrics)) << Output(name, job);
    // Not at the very start of the next epoch: a cancel before its first step resumes at the
    // epoch boundary, which is not what these tests are about.
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    const auto sh = RunShell("scancel --signal=USR2 " + scope + job);
    ASSERT_EQ(sh.exit_code, 0) << sh.output;
    // Released only once the first attempt has left the node: pending, and no node still
    // completing.
    const auto requeue_deadline = Clock::now() + std::chrono::seconds(60);
    bool settled = false;
    while (Clock::now() < requeue_deadline && !settled) {
      const auto text = RunShell("scontrol show job " + job).output;
      const auto state = RunShell("squeue -h -j " + job + " -o %T").output;
      const auto nodes = RunShell("sinfo -h -N -o %T").output;
      settled = text.find("Restarts=1") != std::string::npos && text.find("JobState=PENDING") != std::string::npos &&
                state == "PENDING\n" && nodes.find("completing") == std::string::npos;
      if (!settled) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ASSERT_TRUE(settled) << "the job did not requeue within 60 s\n" << Diagnostics(name, job);
    // slurmd revoked the first attempt's credential when the job was killed, and takes a new
    // credential for a reissue only when it is dated a later second than the revocation: a
    // release in the same second is refused ("Job credential revoked") and the job FAILS.
    // Slurm itself holds requeued jobs for much longer (BeginTime); the test waits 2 s.
    std::this_thread::sleep_for(std::chrono::seconds(2));
    RunShell("scontrol update jobid=" + job + " StartTime=now");
  }

  static fs::path Run(const std::string& name) { return *work_ / "runs" / name; }

  // What a failed job assertion shows: the job's output, Slurm's view of it, and the tails of
  // the controller's and the node daemon's logs.
  static std::string Diagnostics(const std::string& name, const std::string& job) {
    const auto tail = [](const fs::path& path) { return RunShell("tail -n 40 '" + path.string() + "'").output; };
    std::string text = Output(name, job) + "\n--- scontrol show job " + job + "\n" +
                       RunShell("scontrol show job " + job).output + "\n--- sinfo\n" + RunShell("sinfo -N").output;
    for (const auto& log : fs::directory_iterator(*work_ / "cluster" / "log")) {
      text += "\n--- " + log.path().filename().string() + " (last 40 lines)\n" + tail(log.path());
    }
    return text;
  }

  static inline fs::path* work_ = nullptr;
  static inline LocalSlurm* cluster_ = nullptr;
  static inline std::string* skip_ = new std::string();
  static inline std::string* setup_error_ = new std::string();
};

TEST_F(SlurmTest, TwoTaskSrunJobReproducesMpirunAndOneProcess) {
  const std::string common = "--set model.dropout=0 --set train.epochs=1 --set train.max_steps_per_epoch=6";
  auto sh = RunShell("OMP_NUM_THREADS=1 " + Train("single", common));
  ASSERT_EQ(sh.exit_code, 0) << sh.output;
#ifdef IISAN_MPIEXEC
  sh = RunShell("OMP_NUM_THREADS=1 " IISAN_MPIEXEC " " IISAN_MPIEXEC_FLAGS " -np 2 " + Train("mpi2", common));
  ASSERT_EQ(sh.exit_code, 0) << sh.output;
#endif
  const auto job = Submit("srun2", "#SBATCH --nodes=1\n#SBATCH --ntasks=2\n#SBATCH --cpus-per-task=1\n",
                          "srun --mpi=pmix " + Train("srun2", common));
  const auto state = WaitFor(job, 180);
  ASSERT_EQ(state, "COMPLETED") << Output("srun2", job);
  EXPECT_NE(Output("srun2", job).find("from Slurm"), std::string::npos) << Output("srun2", job);
  const auto single = ReadJson(Run("single") / "summary.json");
  std::vector<std::string> others = {"srun2"};
#ifdef IISAN_MPIEXEC
  others.push_back("mpi2");
#endif
  for (const auto& name : others) {
    SCOPED_TRACE(name);
    const auto summary = ReadJson(Run(name) / "summary.json");
    EXPECT_EQ(summary["world_size"], 2);
    for (const char* split : {"valid", "test"}) {
      for (const auto& [key, value] : single[split].items()) {
        EXPECT_NEAR(summary[split][key].get<double>(), value.get<double>(), 1e-12) << split << " " << key;
      }
    }
    EXPECT_LE(MaxDifference(Run("single") / "checkpoints/best.safetensors", Run(name) / "checkpoints/best.safetensors"),
              1e-5);
  }
}

TEST_F(SlurmTest, MpirunInsideAnAllocationReproducesOneProcess) {
#ifndef IISAN_MPIEXEC
  GTEST_SKIP() << "no mpirun was found at configure time";
#else
  const std::string common = "--set model.dropout=0 --set train.epochs=1 --set train.max_steps_per_epoch=6";
  if (!fs::exists(Run("single") / "summary.json")) {
    const auto sh = RunShell("OMP_NUM_THREADS=1 " + Train("single", common));
    ASSERT_EQ(sh.exit_code, 0) << sh.output;
  }
  // Open MPI's variables take precedence over the allocation's (the batch step's SLURM_* say
  // nothing about the ranks mpirun starts).
  const auto job = Submit("mpirun2", "#SBATCH --nodes=1\n#SBATCH --ntasks=2\n#SBATCH --cpus-per-task=1\n",
                          IISAN_MPIEXEC " " IISAN_MPIEXEC_FLAGS " -np 2 " + Train("mpirun2", common));
  ASSERT_EQ(WaitFor(job, 180), "COMPLETED") << Output("mpirun2", job);
  const auto single = ReadJson(Run("single") / "summary.json"), mpi = ReadJson(Run("mpirun2") / "summary.json");
  EXPECT_EQ(mpi["world_size"], 2);
  EXPECT_EQ(mpi["test"]["HR@10"], single["test"]["HR@10"]);
  EXPECT_LE(MaxDifference(Run("single") / "checkpoints/best.safetensors", Run("mpirun2") / "checkpoints/best.safetensors"),
            1e-5);
#endif
}

TEST_F(SlurmTest, APreemptedJobRequeuesResumesMidEpochAndEndsAsAnUninterruptedRun) {
  // Dropout on: the generator states travel in the checkpoint. Batch 4: 150 steps an epoch, so
  // the signal, sent a moment after the first epoch's metrics, lands well inside the second.
  const std::string common =
      "--set train.epochs=3 --set train.patience=100 --set train.resume=auto --set train.batch_size=4";
  auto sh = RunShell("OMP_NUM_THREADS=1 " + Train("whole", common));
  ASSERT_EQ(sh.exit_code, 0) << sh.output;

  // A time limit far away: the log must call the signal a preemption, not the time limit.
  const auto job = Submit("preempt", "#SBATCH --ntasks=1\n#SBATCH --time=30\n#SBATCH --requeue\n#SBATCH --signal=B:USR2@120\n",
                          "exec " + Train("preempt", common));
  // Signalled while the second epoch trains: the batch step is the training itself.
  PreemptAfterFirstEpoch("preempt", job, "--batch ");
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_EQ(WaitFor(job, 180), "COMPLETED") << Diagnostics("preempt", job);

  const auto log = Output("preempt", job);
  EXPECT_NE(log.find("stopped by SIGUSR2"), std::string::npos) << log;
  EXPECT_NE(log.find("preemption or scancel"), std::string::npos) << log;
  EXPECT_NE(log.find("requeueing job " + job), std::string::npos) << log;
  std::smatch resumed;
  ASSERT_TRUE(std::regex_search(log, resumed, std::regex("resumed in epoch ([0-9]+) at step ([0-9]+)"))) << log;
  EXPECT_GT(std::stoi(resumed[2].str()), 0);
  const auto whole = ReadJson(Run("whole") / "summary.json"), preempted = ReadJson(Run("preempt") / "summary.json");
  EXPECT_EQ(preempted["valid"], whole["valid"]);
  EXPECT_EQ(preempted["test"], whole["test"]);
  EXPECT_EQ(preempted["best_epoch"], whole["best_epoch"]);
  EXPECT_EQ(MaxDifference(Run("whole") / "checkpoints/best.safetensors", Run("preempt") / "checkpoints/best.safetensors"),
            0.0);
}

TEST_F(SlurmTest, APreemptedTwoRankJobResumesWithEveryRanksGeneratorState) {
  // Two ranks with dropout: each draws its own masks, so an exact continuation needs every
  // rank's generator state in the checkpoint, not rank 0's alone.
  const std::string common = "--set train.epochs=2 --set train.patience=100 --set train.resume=auto";
  const std::string directives = "#SBATCH --nodes=1\n#SBATCH --ntasks=2\n#SBATCH --cpus-per-task=1\n"
                                 "#SBATCH --time=30\n#SBATCH --requeue\n";
  const auto whole = Submit("dpwhole", directives, "srun --mpi=pmix " + Train("dpwhole", common));
  ASSERT_EQ(WaitFor(whole, 240), "COMPLETED") << Output("dpwhole", whole);
  const auto job = Submit("dppreempt", directives, "srun --mpi=pmix " + Train("dppreempt", common));
  // To the step's tasks (the ranks), as the templates' --signal=USR2@120 does.
  PreemptAfterFirstEpoch("dppreempt", job, "");
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_EQ(WaitFor(job, 240), "COMPLETED") << Diagnostics("dppreempt", job);
  const auto log = Output("dppreempt", job);
  EXPECT_NE(log.find("resumed in epoch 2 at step"), std::string::npos) << log;
  EXPECT_TRUE(fs::exists(Run("dppreempt") / "checkpoints/last/rng-rank1.safetensors"));
  const auto a = ReadJson(Run("dpwhole") / "summary.json"), b = ReadJson(Run("dppreempt") / "summary.json");
  EXPECT_EQ(b["valid"], a["valid"]);
  EXPECT_EQ(b["test"], a["test"]);
  EXPECT_EQ(MaxDifference(Run("dpwhole") / "checkpoints/best.safetensors", Run("dppreempt") / "checkpoints/best.safetensors"),
            0.0);
}

TEST_F(SlurmTest, TheArrayTemplateRunsEveryTaskAtMostTwoAtATime) {
  // slurm/array.sbatch itself: line i of the overrides file is task i's --set options.
  const auto demo = *work_ / "demo";
  const std::string common = "--set data.dir=" + (demo / "data").string() + " --set model.text_backbone=" +
                             (demo / "backbones/text").string() + " --set model.image_backbone=" +
                             (demo / "backbones/image").string() + " --set cache.dir=" + (demo / "cache").string() +
                             " --set run_root=" + (*work_ / "runs").string() + " --set train.batch_size=16";
  const auto overrides = *work_ / "array-overrides.txt";
  {
    std::ofstream out(overrides);
    for (int task = 0; task < 3; ++task) out << common << " --set train.epochs=" << task + 1 << "\n";
  }
  // No GPUs on this cluster: --gpus=0 over the template's --gpus=1, and the CPU as the device.
  const auto sh = RunShell("IISAN=" IISAN_BINARY " IISAN_DEVICE=cpu OMP_NUM_THREADS=1 sbatch --parsable --gpus=0 "
                           "--cpus-per-task=1 --array=0-2%2 --output=" + (*work_).string() + "/array-%A_%a.out " +
                           IISAN_SOURCE_DIR "/slurm/array.sbatch " IISAN_SOURCE_DIR "/experiments/configs/demo.json " +
                           overrides.string());
  ASSERT_EQ(sh.exit_code, 0) << sh.output;
  const std::string job = sh.output.substr(0, sh.output.find_first_of(";\n"));
  int most_running = 0;
  const auto deadline = Clock::now() + std::chrono::seconds(240);
  while (Clock::now() < deadline) {
    const auto running = RunShell("squeue -h -t R -j " + job + " -o %i").output;
    most_running = std::max<int>(most_running, static_cast<int>(std::count(running.begin(), running.end(), '\n')));
    if (RunShell("squeue -h -j " + job).output.empty()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_LE(most_running, 2);
  EXPECT_GE(most_running, 1);
  for (int task = 0; task < 3; ++task) {
    const auto run = Run("iisan-array-" + job + "_" + std::to_string(task));
    ASSERT_TRUE(fs::exists(run / "summary.json"))
        << "task " << task << ": " << ReadText(*work_ / ("array-" + job + "_" + std::to_string(task) + ".out"));
    EXPECT_EQ(ReadJson(run / "summary.json")["epochs_run"], task + 1) << "task " << task << " got its own line";
  }
}

TEST_F(SlurmTest, ASweepRunsAsAWorkerArrayCappedAtItsConcurrency) {
  // `iisan sweep run --executor slurm`: the scheduler here, its workers an array of
  // slurm/sweep.sbatch tasks, at most `concurrency` at a time; ASHA prunes some trials.
  const auto demo = *work_ / "demo";
  nlohmann::json spec = nlohmann::json::parse(R"({
    "name": "slurm-sweep",
    "space": {"train.lr.recsys": {"loguniform": [1e-4, 1e-2]}, "model.dropout": {"uniform": [0.0, 0.3]}},
    "trials": 6, "concurrency": 2, "seed": 5,
    "early_stopping": {"rule": "asha", "reduction_factor": 2, "grace_period": 1, "max_epochs": 3}
  })");
  spec["base"] = {{"data", {{"dir", (demo / "data").string()}}},
                  {"model", {{"text_backbone", (demo / "backbones/text").string()},
                             {"image_backbone", (demo / "backbones/image").string()}}},
                  {"cache", {{"dir", (demo / "cache").string()}}},
                  {"train", {{"batch_size", 16}, {"patience", 100}, {"device", "cpu"}}}};
  const auto spec_file = *work_ / "sweep.json";
  std::ofstream(spec_file) << spec.dump(2);
  const auto dir = *work_ / "sweep";
  const auto sh = RunShell("OMP_NUM_THREADS=1 " IISAN_BINARY " sweep run " + spec_file.string() + " --dir " +
                           dir.string() + " --executor slurm --sbatch-arg=--gpus=0 --sbatch-arg=--cpus-per-task=1");
  ASSERT_EQ(sh.exit_code, 0) << sh.output;
  EXPECT_NE(sh.output.find("slurm executor: array job"), std::string::npos) << sh.output;
  EXPECT_NE(sh.output.find("6/6 trials done"), std::string::npos) << sh.output;
  std::ifstream lines(dir / "trials.jsonl");
  int trials = 0, pruned = 0;
  std::set<std::string> workers;
  for (std::string line; std::getline(lines, line);) {
    const auto trial = nlohmann::json::parse(line);
    ++trials;
    pruned += trial["status"] == "pruned";
    EXPECT_TRUE(trial["status"] == "pruned" || trial["status"] == "completed") << line;
    EXPECT_TRUE(fs::exists(fs::path(trial["run_dir"].get<std::string>()) / "summary.json")) << line;
  }
  EXPECT_EQ(trials, 6);
  EXPECT_GT(pruned, 0);
  // The workers were array tasks (their logs are the array's output files).
  int task_logs = 0;
  for (const auto& entry : fs::directory_iterator(dir / "workers")) {
    task_logs += entry.path().filename().string().rfind("iisan-sweep-slurm-sweep-", 0) == 0;
  }
  EXPECT_GE(task_logs, 1);
}

TEST_F(SlurmTest, ARendezvousThatCannotResolveFailsFastNamingTheVariable) {
  const auto job = Submit("norendezvous", "#SBATCH --nodes=1\n#SBATCH --ntasks=2\n#SBATCH --cpus-per-task=1\n",
                          "srun bash -c 'unset SLURM_STEP_NODELIST SLURM_JOB_NODELIST SLURM_NODELIST; exec " +
                              Train("norendezvous") + "'");
  const auto start = Clock::now();
  const auto state = WaitFor(job, 60);
  const auto log = Output("norendezvous", job);
  EXPECT_EQ(state, "FAILED") << log;
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - start).count(), 60.0);
  EXPECT_NE(log.find("SLURM_STEP_NODELIST"), std::string::npos) << log;
  EXPECT_FALSE(fs::exists(Run("norendezvous") / "summary.json"));
}

// Last: it restarts the cluster with two nodes (two slurmd's here), then with one again.
TEST_F(SlurmTest, TwoNodesOneTaskEachReproduceOneProcess) {
  const std::string common = "--set model.dropout=0 --set train.epochs=1 --set train.max_steps_per_epoch=6";
  if (!fs::exists(Run("single") / "summary.json")) {
    const auto sh = RunShell("OMP_NUM_THREADS=1 " + Train("single", common));
    ASSERT_EQ(sh.exit_code, 0) << sh.output;
  }
  cluster_->Stop();
  bool unavailable = false;
  ASSERT_EQ(cluster_->Start(*work_ / "cluster2", 2, unavailable, /*nodes=*/2), "");
  // The node names n1, n2 do not resolve here, so rank 0's address is given; ranks, local ranks
  // and the world still come from srun's environment on two slurmd's.
  const auto job = Submit("nodes2", "#SBATCH --nodes=2\n#SBATCH --ntasks-per-node=1\n#SBATCH --cpus-per-task=1\n",
                          "export IISAN_RENDEZVOUS=tcp:127.0.0.1:$((20000 + SLURM_JOB_ID % 20000))\n"
                          // Not --mpi=pmix: two slurmd's of one host collide in PMIx's /tmp folders.
                          "srun " + Train("nodes2", common));
  const auto state = WaitFor(job, 180);
  const auto log = Output("nodes2", job);
  cluster_->Stop();
  ASSERT_EQ(cluster_->Start(*work_ / "cluster", 2, unavailable), "");
  ASSERT_EQ(state, "COMPLETED") << log;
  EXPECT_NE(log.find("rank 1 of 2"), std::string::npos) << log;
  const auto single = ReadJson(Run("single") / "summary.json"), nodes = ReadJson(Run("nodes2") / "summary.json");
  EXPECT_EQ(nodes["world_size"], 2);
  EXPECT_EQ(nodes["test"]["HR@10"], single["test"]["HR@10"]);
  EXPECT_LE(MaxDifference(Run("single") / "checkpoints/best.safetensors", Run("nodes2") / "checkpoints/best.safetensors"),
            1e-5);
}

}  // namespace
}  // namespace iisan::testing
