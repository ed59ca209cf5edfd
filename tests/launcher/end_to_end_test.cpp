// The `iisan` binary end to end: synthetic data → cache → training → run directory, the
// reproducibility of two identical runs, the profile of train.profile_steps, and bad input
// failing cleanly.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <set>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "core/models/safetensors.h"

namespace {

struct Result {
  int exit_code;
  std::string output;
};

// `env`: assignments for the command's environment ("NAME=value …"), or empty.
Result RunIisan(const std::string& args, const std::string& env = "") {
  const std::string command = env + (env.empty() ? "" : " ") + std::string(IISAN_BINARY) + " " + args + " 2>&1";
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(command.c_str(), "r"), pclose);
  std::string output;
  std::array<char, 4096> buffer{};
  while (fgets(buffer.data(), buffer.size(), pipe.get())) output += buffer.data();
  const int status = pclose(pipe.release());
  return {WEXITSTATUS(status), output};
}

std::filesystem::path Fresh(const std::string& name) {
  auto dir = std::filesystem::path(::testing::TempDir()) / ("e2e_" + name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

nlohmann::json ReadJson(const std::filesystem::path& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

// A small but complete demo: the same pipeline `make demo` runs, on fewer users and epochs.
TEST(EndToEndTest, DemoTrainsBeatsPopularityAndReproduces) {
  const auto work = Fresh("demo");
  ASSERT_EQ(RunIisan("data synth " + (work / "data").string() + " --users 1200 --items 400 --categories 8").exit_code, 0);
  std::vector<nlohmann::json> summaries;
  for (int run = 0; run < 2; ++run) {
    const auto result = RunIisan("demo --workdir " + work.string() + " --set train.epochs=8 --set name=run" +
                            std::to_string(run));
    ASSERT_EQ(result.exit_code, 0) << result.output;
    EXPECT_NE(result.output.find("| IISAN (cached)"), std::string::npos) << result.output;
    const auto run_dir = work / "runs" / ("run" + std::to_string(run));
    for (const char* file : {"config.json", "metrics.jsonl", "summary.json", "checkpoints/best.safetensors",
                             "checkpoints/last/model.safetensors", "checkpoints/last/trainer.safetensors",
                             "checkpoints/last/trainer.json"}) {
      EXPECT_TRUE(std::filesystem::exists(run_dir / file)) << file;
    }
    summaries.push_back(ReadJson(run_dir / "summary.json"));
  }
  const auto& summary = summaries[0];
  EXPECT_GT(summary["test"]["HR@10"].get<double>(), summary["popularity_test"]["HR@10"].get<double>())
      << summary.dump(2);
  EXPECT_EQ(summaries[0]["test"], summaries[1]["test"]) << "two identical runs differ";
  EXPECT_EQ(summaries[0]["valid"], summaries[1]["valid"]);

  // The second run reused the first run's cache: one cache file only.
  int caches = 0;
  for (const auto& entry : std::filesystem::directory_iterator(work / "cache")) caches += entry.path().extension() == ".h5";
  EXPECT_EQ(caches, 1);

  // `iisan eval` on the run reproduces the summary's test metrics from the checkpoint.
  const auto eval = RunIisan("eval " + (work / "runs" / "run0").string());
  ASSERT_EQ(eval.exit_code, 0) << eval.output;
  const auto json_start = eval.output.find("{\n");
  ASSERT_NE(json_start, std::string::npos) << eval.output;
  const auto evaluated = nlohmann::json::parse(eval.output.substr(json_start));
  EXPECT_NEAR(evaluated["test"]["HR@10"].get<double>(), summary["test"]["HR@10"].get<double>(), 1e-9);
}

std::vector<nlohmann::json> ReadMetrics(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::vector<nlohmann::json> lines;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) lines.push_back(nlohmann::json::parse(line));
  }
  return lines;
}

void ExpectSameTensors(const std::filesystem::path& a, const std::filesystem::path& b) {
  const iisan::models::SafetensorsReader left(a), right(b);
  ASSERT_EQ(left.names(), right.names()) << a << " vs " << b;
  for (const auto& name : left.names()) {
    EXPECT_TRUE(torch::equal(left.Tensor(name), right.Tensor(name))) << name << ": " << a << " vs " << b;
  }
}

// A run stopped after 2 of 4 epochs and resumed with train.resume ends exactly where an
// uninterrupted 4-epoch run ends: the same weights, optimizer moments, generator states,
// metrics and best epoch (dropout draws from the restored generator).
TEST(EndToEndTest, AResumedRunEndsExactlyAsAnUninterruptedOne) {
  const auto work = Fresh("resume");
  ASSERT_EQ(RunIisan("data synth " + (work / "data").string() + " --users 600 --items 200 --categories 6").exit_code, 0);
  const std::string common = "demo --workdir " + work.string() + " --set train.patience=100";
  auto whole = RunIisan(common + " --set train.epochs=4 --set name=whole");
  ASSERT_EQ(whole.exit_code, 0) << whole.output;
  auto part = RunIisan(common + " --set train.epochs=2 --set name=part");
  ASSERT_EQ(part.exit_code, 0) << part.output;
  ASSERT_EQ(ReadMetrics(work / "runs/part/metrics.jsonl").size(), 2u);
  // As if killed during epoch 3 after its line was written but before its checkpoint: a stray line.
  {
    std::ofstream metrics(work / "runs/part/metrics.jsonl", std::ios::app);
    metrics << R"({"epoch": 3, "train_loss": 123.0})" << "\n";
  }
  const auto resumed = RunIisan(common + " --set train.epochs=4 --set name=part --set train.resume=true");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("resumed after epoch 2"), std::string::npos) << resumed.output;

  const auto a = ReadMetrics(work / "runs/whole/metrics.jsonl"), b = ReadMetrics(work / "runs/part/metrics.jsonl");
  ASSERT_EQ(a.size(), 4u);
  ASSERT_EQ(b.size(), 4u) << "the stray epoch-3 line was not dropped, or epochs are missing";
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i]["epoch"], b[i]["epoch"]);
    EXPECT_EQ(a[i]["train_loss"], b[i]["train_loss"]) << "epoch " << i + 1;
    EXPECT_EQ(a[i]["valid"], b[i]["valid"]) << "epoch " << i + 1;
  }
  const auto sa = ReadJson(work / "runs/whole/summary.json"), sb = ReadJson(work / "runs/part/summary.json");
  EXPECT_EQ(sa["best_epoch"], sb["best_epoch"]);
  EXPECT_EQ(sa["test"], sb["test"]);
  EXPECT_EQ(sb["epochs_run"], 4);
  ExpectSameTensors(work / "runs/whole/checkpoints/best.safetensors", work / "runs/part/checkpoints/best.safetensors");
  ExpectSameTensors(work / "runs/whole/checkpoints/last/model.safetensors",
                    work / "runs/part/checkpoints/last/model.safetensors");
  ExpectSameTensors(work / "runs/whole/checkpoints/last/trainer.safetensors",
                    work / "runs/part/checkpoints/last/trainer.safetensors");

  // A resume that changes the model is refused, naming the key; one without a run says so.
  const auto changed = RunIisan(common + " --set train.epochs=5 --set name=part --set train.resume=true"
                                         " --set model.embedding_dim=32");
  EXPECT_NE(changed.exit_code, 0);
  EXPECT_NE(changed.output.find("model/embedding_dim"), std::string::npos) << changed.output;
  // So is one on states of another dtype: cache.dtype's default depends on the device, and the
  // run's config.json holds it resolved (float32 here, on the CPU).
  EXPECT_EQ(ReadJson(work / "runs/part/config.json")["cache"]["dtype"], "float32");
  const auto other_dtype = RunIisan(common + " --set train.epochs=5 --set name=part --set train.resume=true"
                                             " --set cache.dtype=bfloat16");
  EXPECT_NE(other_dtype.exit_code, 0);
  EXPECT_NE(other_dtype.output.find("cache/dtype is \"bfloat16\""), std::string::npos) << other_dtype.output;
  const auto missing = RunIisan(common + " --set train.epochs=5 --set name=nothing --set train.resume=true");
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.output.find("no run to resume"), std::string::npos) << missing.output;
  EXPECT_EQ(ReadMetrics(work / "runs/part/metrics.jsonl").size(), 4u) << "a refused resume touched the run";

  // train.checkpoint_every=0 writes no resumable checkpoint; resuming such a run says so.
  ASSERT_EQ(RunIisan(common + " --set train.epochs=1 --set name=none --set train.checkpoint_every=0").exit_code, 0);
  EXPECT_FALSE(std::filesystem::exists(work / "runs/none/checkpoints/last"));
  const auto nothing = RunIisan(common + " --set train.epochs=2 --set name=none --set train.resume=true");
  EXPECT_NE(nothing.exit_code, 0);
  EXPECT_NE(nothing.output.find("nothing to resume"), std::string::npos) << nothing.output;
  EXPECT_EQ(ReadJson(work / "runs/none/config.json")["train"]["epochs"], 1) << "a refused resume rewrote the config";

  // train.resume=auto: a finished run is left alone; one that left no checkpoint (and no
  // summary) starts again in its own directory; one with nothing starts.
  const auto finished = RunIisan(common + " --set train.epochs=4 --set name=part --set train.resume=auto");
  ASSERT_EQ(finished.exit_code, 0) << finished.output;
  EXPECT_NE(finished.output.find("finished already"), std::string::npos) << finished.output;
  EXPECT_EQ(ReadMetrics(work / "runs/part/metrics.jsonl").size(), 4u);
  std::filesystem::remove(work / "runs/none/summary.json");
  const auto restarted = RunIisan(common + " --set train.epochs=1 --set name=none --set train.resume=auto");
  ASSERT_EQ(restarted.exit_code, 0) << restarted.output;
  EXPECT_NE(restarted.output.find("restarting (no checkpoint)"), std::string::npos) << restarted.output;
  EXPECT_EQ(ReadMetrics(work / "runs/none/metrics.jsonl").size(), 1u);
  const auto fresh = RunIisan(common + " --set train.epochs=1 --set name=fresh --set train.resume=auto");
  ASSERT_EQ(fresh.exit_code, 0) << fresh.output;
  EXPECT_TRUE(std::filesystem::exists(work / "runs/fresh/summary.json"));
}

// `iisan train` logs each start-up phase as it ends and the time to its first step, and writes
// them to summary.json: phases from the process's start (the shared libraries) to the first step,
// in order, adding up to the total.
TEST(EndToEndTest, TrainReportsItsStartUpPhases) {
  const auto work = Fresh("startup");
  ASSERT_EQ(RunIisan("data synth " + (work / "data").string() + " --users 300 --items 100 --categories 4").exit_code, 0);
  // The demo writes the tiny backbones and builds the cache that `iisan train` then opens.
  const auto demo = RunIisan("demo --workdir " + work.string() + " --set train.epochs=1 --set name=demo");
  ASSERT_EQ(demo.exit_code, 0) << demo.output;
  const auto train = RunIisan(
      "train --config " + std::string(IISAN_SOURCE_DIR) + "/experiments/configs/demo.json --set data.dir=" +
      (work / "data").string() + " --set model.text_backbone=" + (work / "backbones/text").string() +
      " --set model.image_backbone=" + (work / "backbones/image").string() + " --set cache.dir=" +
      (work / "cache").string() + " --set run_root=" + (work / "runs").string() +
      " --set name=started --set train.epochs=1");
  ASSERT_EQ(train.exit_code, 0) << train.output;
  const std::vector<std::string> expected = {"libraries", "config",          "dataset",       "cache key",
                                             "model",     "cache check",     "cache load",    "device transfer",
                                             "run directory", "trainer",     "first step"};
  size_t at = 0;
  for (const auto& phase : expected) {
    at = train.output.find("start-up: " + phase + " ", at);
    EXPECT_NE(at, std::string::npos) << "no line for the phase '" << phase << "' after the one before:\n"
                                     << train.output;
    if (at == std::string::npos) return;
  }
  EXPECT_NE(train.output.find(" to the first step ("), std::string::npos) << train.output;

  const auto summary = ReadJson(work / "runs/started/summary.json");
  ASSERT_TRUE(summary["startup_seconds"].is_number()) << summary.dump(2);
  std::vector<std::string> phases;
  double total = 0;
  for (const auto& [phase, seconds] : summary["startup_phases"].items()) {
    phases.push_back(phase);
    EXPECT_GE(seconds.get<double>(), 0.0) << phase;
    total += seconds.get<double>();
  }
  std::sort(phases.begin(), phases.end());
  auto sorted = expected;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(phases, sorted);
  EXPECT_NEAR(total, summary["startup_seconds"].get<double>(), 1e-6 * (1.0 + total));
}

// `iisan cache serve` as a child process, stopped (SIGTERM, then waited for) at the end of scope.
class ServeProcess {
 public:
  ServeProcess(const std::vector<std::string>& args, const std::filesystem::path& log) {
    std::vector<std::string> argv = {IISAN_BINARY, "cache", "serve"};
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<char*> pointers;
    for (auto& arg : argv) pointers.push_back(arg.data());
    pointers.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    if (posix_spawn(&pid_, IISAN_BINARY, &actions, nullptr, pointers.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&actions);
  }
  ~ServeProcess() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    int status = 0;
    ::waitpid(pid_, &status, 0);
  }
  bool started() const { return pid_ > 0; }

 private:
  pid_t pid_ = -1;
};

// A run trained through a token-guarded cache service keeps "<redacted>" in its config.json;
// `iisan eval` then takes the token from --set or IISAN_CACHE_TOKEN, never sends the placeholder,
// and without a token says how to pass one.
TEST(EndToEndTest, EvalTakesTheServiceTokenFromSetOrTheEnvironment) {
  const auto work = Fresh("served");
  ASSERT_EQ(RunIisan("data synth " + (work / "data").string() + " --users 300 --items 100 --categories 4").exit_code, 0);
  const std::string demo = "demo --workdir " + work.string() + " --set train.epochs=1";
  const auto local = RunIisan(demo + " --set name=local");  // writes the backbones, builds the cache
  ASSERT_EQ(local.exit_code, 0) << local.output;

  const auto socket = work / "cache" / "service.sock";
  ServeProcess serve({"--set", "cache.dir=" + (work / "cache").string(), "--token", "s3cret"}, work / "serve.log");
  ASSERT_TRUE(serve.started());
  for (int i = 0; i < 600 && !std::filesystem::exists(socket); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(std::filesystem::exists(socket)) << "the service did not start";
  const std::string service = " --set cache.service=unix:" + socket.string();
  const auto served = RunIisan(demo + " --set name=served --set cache.token=s3cret" + service);
  ASSERT_EQ(served.exit_code, 0) << served.output;
  const auto run = (work / "runs" / "served").string();
  EXPECT_EQ(ReadJson(work / "runs/served/config.json")["cache"]["token"], "<redacted>");

  const auto without = RunIisan("eval " + run, "IISAN_CACHE_TOKEN=");
  EXPECT_NE(without.exit_code, 0);
  EXPECT_NE(without.output.find("--set cache.token=TOKEN"), std::string::npos) << without.output;
  EXPECT_NE(without.output.find("IISAN_CACHE_TOKEN"), std::string::npos) << without.output;
  const auto wrong = RunIisan("eval " + run + " --set cache.token=wrong", "IISAN_CACHE_TOKEN=");
  EXPECT_NE(wrong.exit_code, 0);
  EXPECT_NE(wrong.output.find("wrong token"), std::string::npos) << "the token given is the token sent: "
                                                                  << wrong.output;
  const auto with_set = RunIisan("eval " + run + " --set cache.token=s3cret", "IISAN_CACHE_TOKEN=");
  ASSERT_EQ(with_set.exit_code, 0) << with_set.output;
  const auto with_environment = RunIisan("eval " + run, "IISAN_CACHE_TOKEN=s3cret");
  ASSERT_EQ(with_environment.exit_code, 0) << with_environment.output;
  const auto json_start = with_environment.output.find("{\n");
  ASSERT_NE(json_start, std::string::npos) << with_environment.output;
  EXPECT_NEAR(nlohmann::json::parse(with_environment.output.substr(json_start))["test"]["HR@10"].get<double>(),
              ReadJson(work / "runs/served/summary.json")["test"]["HR@10"].get<double>(), 1e-9);
}

// A learning rate that makes the loss non-finite stops `iisan train` with an error that names the
// epoch and its first non-finite step and says what to do; the checkpoints of the epochs before
// are kept as they were.
TEST(EndToEndTest, ADivergedRunNamesEpochAndStepAndKeepsTheLastGoodCheckpoint) {
  const auto work = Fresh("diverged");
  ASSERT_EQ(RunIisan("data synth " + (work / "data").string() + " --users 400 --items 150 --categories 6").exit_code, 0);
  const auto good = RunIisan("demo --workdir " + work.string() + " --set train.epochs=1 --set name=run");
  ASSERT_EQ(good.exit_code, 0) << good.output;
  const auto run = work / "runs" / "run";
  const auto best = iisan::models::SafetensorsReader(run / "checkpoints/best.safetensors");
  std::vector<torch::Tensor> best_before;
  for (const auto& name : best.names()) best_before.push_back(best.Tensor(name).clone());
  const auto last_before = ReadJson(run / "checkpoints/last/trainer.json");
  ASSERT_EQ(last_before["epochs_done"], 1);

  // Every group at the schema's largest learning rate (1e30 would be refused by its range).
  std::string lr;
  for (const char* group : {"recsys", "text", "image", "adapter_text", "adapter_image"}) {
    lr += std::string(" --set train.lr.") + group + "=1000";
  }
  const auto diverged = RunIisan("train -c " + (run / "config.json").string() +
                                 " --set train.resume=true --set train.epochs=2" + lr);
  EXPECT_NE(diverged.exit_code, 0) << diverged.output;
  EXPECT_NE(diverged.output.find("epoch 2: the training loss is not finite ("), std::string::npos) << diverged.output;
  EXPECT_NE(diverged.output.find("; first at step "), std::string::npos) << diverged.output;
  EXPECT_NE(diverged.output.find("Lower the learning rate (train.lr.*)"), std::string::npos) << diverged.output;

  // The last good checkpoint is the one of epoch 1, untouched; no line of epoch 2 was written.
  EXPECT_EQ(ReadJson(run / "checkpoints/last/trainer.json"), last_before);
  const auto best_after = iisan::models::SafetensorsReader(run / "checkpoints/best.safetensors");
  ASSERT_EQ(best_after.names(), best.names());
  for (size_t i = 0; i < best_before.size(); ++i) {
    EXPECT_TRUE(torch::equal(best_after.Tensor(best.names()[i]), best_before[i])) << best.names()[i];
  }
  EXPECT_EQ(ReadMetrics(run / "metrics.jsonl").size(), 1u);
}

// train.profile_steps writes profile/ into the run directory: a breakdown of the profiled
// training steps and one of the evaluation pass after them, and a readable summary. At 0 (the
// default) nothing is profiled; an epoch too short for the window is refused before the run
// directory is made.
TEST(EndToEndTest, ProfileStepsWriteAKernelBreakdownIntoTheRunDirectory) {
  const auto work = Fresh("profile");
  ASSERT_EQ(RunIisan("data synth " + (work / "data").string() + " --users 300 --items 100 --categories 4").exit_code, 0);
  const std::string demo = "demo --workdir " + work.string() + " --set train.epochs=1";
  const auto profiled = RunIisan(demo + " --set train.batch_size=8 --set train.profile_steps=3 --set name=profiled");
  ASSERT_EQ(profiled.exit_code, 0) << profiled.output;
  const auto dir = work / "runs/profiled/profile";
  std::set<std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) files.insert(entry.path().filename().string());
  EXPECT_EQ(files, (std::set<std::string>{"eval.json", "summary.txt", "train_steps.json"}));
  for (const std::string phase : {"train_steps", "eval"}) {
    const auto json = ReadJson(dir / (phase + ".json"));
    EXPECT_EQ(json["phase"], phase);
    EXPECT_EQ(json["device"], "cpu");
    EXPECT_EQ(json["activities"], "cpu");
    const int64_t steps = json["steps"].get<int64_t>();
    EXPECT_GE(steps, 1) << phase;
    double shares = 0.0;
    int64_t matmul_calls = 0;
    ASSERT_FALSE(json["kernels"].empty()) << phase;
    for (const auto& row : json["kernels"]) {
      shares += row["share"].get<double>();
      const auto name = row["name"].get<std::string>();
      if (name == "aten::mm" || name == "aten::addmm" || name == "aten::bmm" || name == "aten::matmul" ||
          name == "aten::linear") {
        matmul_calls = std::max(matmul_calls, row["calls"].get<int64_t>());
      }
    }
    EXPECT_NEAR(shares, 1.0, 1e-6) << phase;
    EXPECT_GE(matmul_calls, steps) << phase << ": no matmul-family op ran once a step";
    EXPECT_GT(json["kernels_per_step"].get<double>(), 0.0) << phase;
    EXPECT_GT(json["busy_fraction"].get<double>(), 0.0) << phase;
  }
  const auto steps = ReadJson(dir / "train_steps.json");
  EXPECT_EQ(steps["steps"], 3);
  EXPECT_EQ(steps["first_step"], 10);
  EXPECT_EQ(steps["step_engine"], "eager");
  std::ifstream summary_in(dir / "summary.txt");
  const std::string summary((std::istreambuf_iterator<char>(summary_in)), std::istreambuf_iterator<char>());
  EXPECT_NE(summary.find("== train_steps: 3 training steps (epoch 1, steps 11-13 of it), eager"), std::string::npos)
      << summary;
  EXPECT_NE(summary.find("== eval: "), std::string::npos) << summary;

  const auto plain = RunIisan(demo + " --set train.batch_size=8 --set name=plain");
  ASSERT_EQ(plain.exit_code, 0) << plain.output;
  EXPECT_TRUE(std::filesystem::exists(work / "runs/plain/summary.json"));
  EXPECT_FALSE(std::filesystem::exists(work / "runs/plain/profile")) << "train.profile_steps=0 profiled";

  const auto short_epochs = RunIisan(demo + " --set train.batch_size=64 --set train.profile_steps=3 --set name=short");
  EXPECT_NE(short_epochs.exit_code, 0);
  EXPECT_NE(short_epochs.output.find("train.profile_steps=3: profiling starts at an epoch's step 11"),
            std::string::npos)
      << short_epochs.output;
  EXPECT_FALSE(std::filesystem::exists(work / "runs/short")) << "a refused config made a run directory";
}

TEST(EndToEndTest, BadDataFailsWithFileAndLineAndWritesNoRun) {
  const auto work = Fresh("bad");
  std::filesystem::create_directories(work / "data");
  std::ofstream(work / "data" / "items.tsv") << "A\tfirst title\nB\tsecond title\n";
  std::ofstream(work / "data" / "users.tsv") << "u1\tA B A B A\nu2 A B A B A\n";
  const auto result = RunIisan("train --set data.dir=" + (work / "data").string() + " --set model.modality=text" +
                          " --set model.text_backbone=" + (work / "nowhere").string() +
                          " --set run_root=" + (work / "runs").string());
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.output.find("users.tsv:2"), std::string::npos) << result.output;
  EXPECT_FALSE(std::filesystem::exists(work / "runs"));
}

// `iisan config show` prints the resolved config (token redacted); `iisan config schema` every key.
TEST(EndToEndTest, ConfigShowAndSchema) {
  const auto show = RunIisan("config show --set train.epochs=3 --set cache.token=s3cret --set name=42");
  ASSERT_EQ(show.exit_code, 0) << show.output;
  const auto config = nlohmann::json::parse(show.output);
  EXPECT_EQ(config["train"]["epochs"], 3);
  EXPECT_EQ(config["name"], "42");
  EXPECT_EQ(config["cache"]["token"], "<redacted>");
  EXPECT_EQ(show.output.find("s3cret"), std::string::npos);

  const auto schema = RunIisan("config schema");
  ASSERT_EQ(schema.exit_code, 0) << schema.output;
  const auto keys = nlohmann::json::parse(schema.output);
  ASSERT_TRUE(keys.is_array());
  bool found = false;
  for (const auto& entry : keys) {
    if (entry["key"] != "eval.batch_size") continue;
    found = true;
    EXPECT_EQ(entry["type"], "integer");
    EXPECT_EQ(entry["default"], 1048576);
    EXPECT_EQ(entry["min"], 1);
  }
  EXPECT_TRUE(found) << schema.output;

  const auto bad = RunIisan("config show --set eval.batch_size=0");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.output.find("config key 'eval.batch_size' must be in [1, "), std::string::npos) << bad.output;
}

TEST(EndToEndTest, UnknownConfigKeyNamesTheNearest) {
  const auto result = RunIisan("train --set train.epoch=3");
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.output.find("did you mean 'train.epochs'"), std::string::npos) << result.output;
}

TEST(EndToEndTest, ScientificStatsMatchTheReferenceCounts) {
  const std::filesystem::path dir = std::filesystem::path(IISAN_SOURCE_DIR) / "../shared/data/amazon-scientific";
  if (!std::filesystem::exists(dir / "users.tsv")) {
    GTEST_SKIP() << dir << " is absent (the shared Amazon data is only on development machines)";
  }
  const auto result = RunIisan("data stats " + dir.string());
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("users:        12,076"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("items:        20,314"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("interactions: 81,711"), std::string::npos) << result.output;
}

TEST(EndToEndTest, DescribeCountsEveryMethodAtBaseSize) {
  const std::filesystem::path data = std::filesystem::path(IISAN_SOURCE_DIR) / "../shared/data";
  if (!std::filesystem::exists(data / "bert-base-uncased/config.json")) {
    GTEST_SKIP() << data << " is absent (the shared backbone configs are only on development machines)";
  }
  // IISAN.md §4, §5; the same counts are checked without the CLI by MethodTest.
  const std::vector<std::pair<std::string, std::string>> expected = {
      {"iisan", "IISAN (cached) trainable parameters: 4,113,877"},
      {"fft", "FFT trainable parameters: 194,897,216"},
      {"adapter", "Adapter trainable parameters: 4,965,440"},
      {"lora", "LoRA trainable parameters: 833,600"},
      {"bitfit", "BitFit trainable parameters: 412,736"}};
  for (const auto& [method, line] : expected) {
    const auto result = RunIisan("describe --method " + method + " --text-backbone " +
                                 (data / "bert-base-uncased").string() + " --image-backbone " +
                                 (data / "vit-base-patch16-224").string());
    ASSERT_EQ(result.exit_code, 0) << result.output;
    EXPECT_NE(result.output.find(line), std::string::npos) << result.output;
    if (method == "iisan") {
      EXPECT_NE(result.output.find("109,482,240"), std::string::npos) << result.output;  // frozen BERT
      EXPECT_NE(result.output.find("85,798,656"), std::string::npos) << result.output;   // frozen ViT
    }
  }
}

}  // namespace
