#include "launcher/sweep/sweep_run.h"

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstring>
#include <map>
#include <sstream>
#include <thread>

#include <glog/logging.h>
#include <torch/cuda.h>

#include "core/data/atomic_file.h"
#include "distributed/local_launch.h"
#include "distributed/rendezvous.h"
#include "launcher/preemption.h"
#include "launcher/sweep/line_rpc.h"
#include "launcher/sweep/scheduler.h"
#include "launcher/sweep/searcher.h"
#include "launcher/sweep/worker.h"

#ifndef IISAN_SLURM_DIR
#define IISAN_SLURM_DIR "slurm"
#endif

namespace iisan::launcher::sweep {
namespace {

namespace fs = std::filesystem;
using Env = std::map<std::string, std::string>;

std::string SelfExe() {
  std::error_code error;
  const auto path = fs::read_symlink("/proc/self/exe", error);
  if (error) throw std::runtime_error("sweep: cannot find the iisan binary (/proc/self/exe): " + error.message());
  return path.string();
}

// A shell command's exit status and output (Slurm and MPS tools).
int Shell(const std::string& command, std::string* output = nullptr) {
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (!pipe) return -1;
  std::string text;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) text.append(buffer, n);
  const int status = ::pclose(pipe);
  if (output) *output = text;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string Quote(const std::string& text) {
  std::string out = "'";
  for (char c : text) {
    if (c == '\'') out += "'\\''";
    else out += c;
  }
  return out + "'";
}

std::vector<std::string> VisibleGpus() {
  const int count = static_cast<int>(torch::cuda::device_count());
  std::vector<std::string> ids;
  const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
  if (visible && *visible) {
    std::stringstream list(visible);
    std::string id;
    while (std::getline(list, id, ',') && static_cast<int>(ids.size()) < count) ids.push_back(id);
  }
  for (int i = static_cast<int>(ids.size()); i < count; ++i) ids.push_back(std::to_string(i));
  return ids;
}

// The CUDA MPS control daemon of this sweep (its own pipe folder), stopped on destruction.
class MpsDaemon {
 public:
  MpsDaemon(const fs::path& dir, bool required) {
    if (Shell("command -v nvidia-cuda-mps-control") != 0) {
      if (required) throw std::runtime_error("sweep: --mps on, but nvidia-cuda-mps-control is not on PATH");
      LOG(INFO) << "sweep: CUDA MPS not available (no nvidia-cuda-mps-control): trials share the GPU by time slices";
      return;
    }
    pipe_ = dir / "mps" / "pipe";
    log_ = dir / "mps" / "log";
    fs::create_directories(pipe_);
    fs::create_directories(log_);
    std::string output;
    if (Shell(Prefix() + "nvidia-cuda-mps-control -d", &output) != 0) {
      if (required) throw std::runtime_error("sweep: cannot start the CUDA MPS daemon: " + output);
      LOG(WARNING) << "sweep: the CUDA MPS daemon did not start (" << output << "): trials share the GPU by time slices";
      pipe_.clear();
      return;
    }
    LOG(INFO) << "sweep: CUDA MPS daemon started (pipe " << pipe_.string() << ")";
  }
  ~MpsDaemon() {
    if (pipe_.empty()) return;
    Shell("echo quit | " + Prefix() + "nvidia-cuda-mps-control");
    LOG(INFO) << "sweep: CUDA MPS daemon stopped";
  }
  void AddTo(Env& env) const {
    if (pipe_.empty()) return;
    env["CUDA_MPS_PIPE_DIRECTORY"] = pipe_.string();
    env["CUDA_MPS_LOG_DIRECTORY"] = log_.string();
  }

 private:
  std::string Prefix() const {
    return "CUDA_MPS_PIPE_DIRECTORY=" + Quote(pipe_.string()) + " CUDA_MPS_LOG_DIRECTORY=" + Quote(log_.string()) + " ";
  }
  fs::path pipe_, log_;
};

void LogProgress(const SweepState& state, std::ostream* out) {
  const auto progress = state.Progress(NowSeconds());
  const auto line = "sweep " + state.spec().name + ": " + progress.Line(state.spec().metric);
  LOG(INFO) << line;
  if (out) *out << line << std::endl;
}

}  // namespace

int SweepRun(const SweepRunOptions& options, std::ostream& out) {
  auto spec = ReadSweepSpec(options.spec_file);
  fs::path dir = options.dir;
  if (dir.empty()) {
    const Config base = ConfigFromJson(spec.base, "sweep base");
    dir = fs::path(base.run_root) / "sweeps" / spec.name;
  }
  fs::create_directories(dir / "workers");
  dir = fs::canonical(dir);
  if (options.executor != "local" && options.executor != "slurm" && options.executor != "inprocess") {
    throw ConfigError("sweep: --executor must be local, slurm or inprocess");
  }
  if (options.trials_per_gpu < 1 || options.trials_per_gpu > 256) {
    throw ConfigError("sweep: --trials-per-gpu must be in [1, 256]");
  }
  if (options.mps != "auto" && options.mps != "on" && options.mps != "off") {
    throw ConfigError("sweep: --mps must be auto, on or off");
  }
  google::SetLogDestination(google::GLOG_INFO, (dir / "scheduler.log.").string().c_str());
  SweepState state(spec, dir, options.db);
  data::WriteFileAtomically(dir / "spec.json", spec.ToJson().dump(2) + "\n");
  SchedulerOptions server_options;
  server_options.listen = options.listen;
  if (!options.listen.empty()) server_options.token = distributed::RandomSecret();
  SchedulerServer server(state, server_options);
  std::thread io([&] { server.Run(); });
  struct StopServer {
    SchedulerServer& server;
    std::thread& io;
    ~StopServer() {
      server.Stop();
      if (io.joinable()) io.join();
    }
  } stop_server{server, io};
  const auto budget = MakeSearcher(spec)->Budget();
  out << "sweep " << spec.name << ": " << budget << " trials, " << spec.searcher << " search, "
      << (spec.early_stopping.rule == StoppingRule::kAsha     ? "ASHA"
          : spec.early_stopping.rule == StoppingRule::kMedian ? "median stopping"
                                                              : "no early stopping")
      << ", scheduler " << server.endpoint() << ", directory " << dir.string() << std::endl;

  CancelOnSignals signals;
  const auto started = std::chrono::steady_clock::now();
  auto last_progress = started;
  auto tick = [&](std::ostream* sink) {
    state.ExpireLeases(NowSeconds());
    if (std::chrono::steady_clock::now() - last_progress > std::chrono::duration<double>(options.progress_every_s)) {
      last_progress = std::chrono::steady_clock::now();
      LogProgress(state, sink);
    }
  };

  int code = 0;
  if (options.executor == "inprocess") {
    WorkerOptions worker;
    worker.endpoint = server.endpoint();
    worker.token = server_options.token;
    worker.name = "inprocess";
    worker.exit_on_abandon = false;
    worker.stop = signals.flag();
    std::exception_ptr failure;
    std::thread thread([&] {
      try {
        RunWorker(worker);
      } catch (...) {
        failure = std::current_exception();
      }
    });
    while (!state.Done() && !signals.flag()->load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      tick(nullptr);
      if (failure) break;
    }
    thread.join();
    if (failure) std::rethrow_exception(failure);
  } else if (options.executor == "local") {
    const Config base = ConfigFromJson(spec.base, "sweep base");
    const bool cuda = base.train.device.rfind("cuda", 0) == 0;
    std::vector<std::string> gpus;
    if (cuda) {
      gpus = VisibleGpus();
      if (gpus.empty()) throw ConfigError("sweep: train.device is " + base.train.device + " but no GPU is visible");
    }
    const int slots = cuda ? static_cast<int>(gpus.size()) * options.trials_per_gpu : spec.concurrency;
    const int workers = std::max(1, std::min({spec.concurrency, slots, budget}));
    std::optional<MpsDaemon> mps;
    if (cuda && options.mps != "off" && (options.trials_per_gpu > 1 || options.mps == "on")) {
      mps.emplace(dir, options.mps == "on");
    }
    const auto exe = SelfExe();
    std::map<pid_t, int> running;  // pid -> worker slot
    int restarts = 0;
    const int max_restarts = workers * spec.max_attempts + 4;
    auto start = [&](int slot) {
      Env env = distributed::ProcessEnvironment();
      if (cuda) env["CUDA_VISIBLE_DEVICES"] = gpus[static_cast<size_t>(slot) % gpus.size()];
      if (mps) mps->AddTo(env);
      const std::string name = "w" + std::to_string(slot);
      const pid_t pid = distributed::SpawnProcess({exe, "sweep", "worker", dir.string(), "--name", name}, env,
                              dir / "workers" / (name + ".log"));
      running[pid] = slot;
    };
    out << "local executor: " << workers << " worker process(es)"
        << (cuda ? " on " + std::to_string(gpus.size()) + " GPU(s), " + std::to_string(options.trials_per_gpu) +
                       " per GPU"
                 : std::string(" on the CPU"))
        << "; logs in " << (dir / "workers").string() << std::endl;
    for (int slot = 0; slot < workers; ++slot) start(slot);
    bool forwarded = false;
    while (!running.empty()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      tick(&out);
      if (signals.flag()->load() && !forwarded) {
        forwarded = true;
        LOG(WARNING) << "sweep: stopping (signal): the workers checkpoint their trials; rerun to resume";
        for (const auto& [pid, slot] : running) ::kill(pid, SIGTERM);
      }
      int status = 0;
      pid_t pid = 0;
      for (const auto& entry : running) {
        if (::waitpid(entry.first, &status, WNOHANG) == entry.first) {
          pid = entry.first;
          break;
        }
      }
      if (pid <= 0) continue;
      const int slot = running[pid];
      running.erase(pid);
      const bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
      if (clean || forwarded || state.Done()) continue;
      const std::string why = WIFEXITED(status) ? "exited with code " + std::to_string(WEXITSTATUS(status))
                                                : "was killed by signal " + std::to_string(WTERMSIG(status));
      if (restarts >= max_restarts) {
        LOG(ERROR) << "sweep: worker w" << slot << " " << why << "; " << restarts
                   << " restarts already, not restarted (see " << (dir / "workers").string() << ")";
        continue;
      }
      ++restarts;
      LOG(WARNING) << "sweep: worker w" << slot << " " << why << "; restarting it (its trial is retried from its "
                   << "last checkpoint once its heartbeat lapses)";
      start(slot);
    }
    if (!state.Done()) code = 1;
  } else {
    // Slurm: a job array of workers; each pulls trials until the sweep is done.
    fs::path script = options.slurm_template.empty() ? fs::path(IISAN_SLURM_DIR) / "sweep.sbatch" : options.slurm_template;
    if (!fs::exists(script)) throw ConfigError("sweep: Slurm template " + script.string() + " not found (--slurm-template)");
    const int tasks = std::max(1, budget);
    std::string command = "IISAN=" + Quote(SelfExe()) + " sbatch --parsable --array=0-" + std::to_string(tasks - 1) +
                          "%" + std::to_string(spec.concurrency) + " --job-name=" + Quote("iisan-sweep-" + spec.name) +
                          " --output=" + Quote((dir / "workers" / "%x-%A_%a.out").string());
    for (const auto& arg : options.sbatch_args) command += " " + Quote(arg);
    command += " " + Quote(script.string()) + " " + Quote(dir.string());
    std::string output;
    if (Shell(command, &output) != 0) throw std::runtime_error("sweep: sbatch failed: " + output);
    std::string job = output.substr(0, output.find_first_of(";\n"));
    if (job.empty() || job.find_first_not_of("0123456789") != std::string::npos) {
      throw std::runtime_error("sweep: sbatch printed no job id: " + output);
    }
    out << "slurm executor: array job " << job << " (" << tasks << " tasks, at most " << spec.concurrency
        << " at a time)" << std::endl;
    auto last_check = std::chrono::steady_clock::now();
    while (!state.Done() && !signals.flag()->load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      tick(&out);
      if (std::chrono::steady_clock::now() - last_check < std::chrono::seconds(5)) continue;
      last_check = std::chrono::steady_clock::now();
      std::string queue;
      if (Shell("squeue -h -j " + job + " -o %i", &queue) == 0 && queue.find_first_not_of(" \n") == std::string::npos) {
        // Give the last workers' final messages a moment, then judge.
        std::this_thread::sleep_for(std::chrono::seconds(1));
        if (state.Done()) break;
        LOG(ERROR) << "sweep: the worker array " << job << " ended with trials left; rerun `iisan sweep run` to resume";
        code = 1;
        break;
      }
    }
    Shell("scancel " + job);
  }
  LogProgress(state, &out);
  state.Export();
  const auto progress = state.Progress(NowSeconds());
  out << "caches: " << progress.caches_built << " built, " << progress.caches_loaded << " loaded from disk, "
      << progress.caches_reused << " reused in memory; " << progress.retries << " trial retries" << std::endl;
  if (progress.best) {
    out << "best: trial " << progress.best_trial << " with " << spec.metric << " " << *progress.best
        << " (`iisan sweep report " << dir.string() << "` writes its config)" << std::endl;
  }
  if (signals.flag()->load()) return 75;
  return code;
}

int SweepWorker(const SweepWorkerOptions& options) {
  const auto [endpoint, token] = FindScheduler(options.dir);
  CancelOnSignals signals;
  WorkerOptions worker;
  worker.endpoint = endpoint;
  worker.token = token;
  worker.name = options.name;
  worker.reconnect = std::chrono::seconds(options.reconnect_s);
  worker.stop = signals.flag();
  RunWorker(worker);
  return signals.flag()->load() ? 75 : 0;
}

void SweepStatus(const fs::path& dir, std::ostream& out) {
  const auto [endpoint, token] = FindScheduler(dir);
  Json request;
  request["op"] = "status";
  if (!token.empty()) request["token"] = token;
  const auto reply = CallLine(endpoint, request, std::chrono::seconds(10));
  out << reply.dump(2) << "\n";
}

}  // namespace iisan::launcher::sweep
