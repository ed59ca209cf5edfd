// Per-kernel breakdowns of a window of training steps or of an evaluation pass (train.profile_steps),
// recorded with LibTorch's Kineto profiler. On a CUDA device a row is a device activity that
// CUPTI reported (a kernel, a memcpy or a memset), timed on the device; on the CPU a row is a
// CPU op (aten::mm, an autograd node, ...) timed by its self time (the time it was the innermost
// op running on its thread, its callees' time excluded), so that the rows add up to the time spent
// inside ops, and shares sum to 1.
// Builds against LibTorch 1.13 (event times in microseconds) and 2.x (nanoseconds) alike.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

namespace iisan::train {

// The steps of an epoch that profiling skips: the step engines' warm-up (a CUDA graph is captured
// at the 4th step) and the first steps' one-time costs. The window starts at this 0-based step.
inline constexpr int64_t kProfileSkipSteps = 10;

// One row of a breakdown: every call of one kernel (or op) name in the window.
struct ProfiledKernel {
  std::string name;
  std::string kind;  // "kernel", "memcpy", "memset" (CUDA) or "cpu op"
  int64_t calls = 0;
  double total_seconds = 0.0;  // device time (CUDA) or self time (CPU), summed over the calls
  double share = 0.0;          // of the profile's kernel_seconds
};

struct KernelProfile {
  std::string phase;        // "train_steps" or "eval": the name of its file in profile/
  std::string device;       // "cpu", "cuda:0"
  std::string activities;   // what Kineto recorded: "cpu" or "cpu+cuda"
  std::string step_engine;  // how the steps ran: "eager", "cuda graph", "data-parallel"
  std::string step_name;    // what a step is: "training step" or "evaluation batch"
  int epoch = 0;
  int64_t first_step = 0;  // training: the window's first step in its epoch (0-based)
  int64_t steps = 0;
  double wall_seconds = 0.0;    // host time of the window, the device synchronised at both ends
  double kernel_seconds = 0.0;  // the rows' summed time
  double busy_seconds = 0.0;    // the union of the rows' intervals (overlaps counted once)
  int64_t kernel_calls = 0;     // kernels launched (CUDA; copies and sets not counted) or CPU ops
  std::vector<ProfiledKernel> kernels;  // longest total first
  std::string note;  // how to read it (CUDA graph replays, no kernel recorded), or empty

  bool on_device() const { return activities != "cpu"; }
  double kernels_per_step() const;
  // busy_seconds / wall_seconds: how much of the window the device (or, on the CPU, the ops) kept busy.
  double busy_fraction() const;
  nlohmann::ordered_json ToJson() const;
  // The readable report: the window's figures and every row.
  std::string ToText() const;
  // The window's figures and its `rows` longest rows, for the log.
  std::string Top(size_t rows) const;
};

// One profiling window: Start() enables Kineto (CPU activity, plus CUDA on a CUDA device) on this
// thread, Stop() disables it and aggregates the events. Work queued before Start() is waited for
// first, and Stop() waits for the device, so the window holds exactly the work issued inside it.
class KernelProfiler {
 public:
  explicit KernelProfiler(const torch::Device& device);
  ~KernelProfiler();  // a window still open is closed and its events dropped
  KernelProfiler(const KernelProfiler&) = delete;
  KernelProfiler& operator=(const KernelProfiler&) = delete;

  // std::runtime_error when a profiler is already active on this thread, or LibTorch refuses to
  // start one (the message says which).
  void Start();
  bool active() const { return active_; }
  // The window's rows and times; the caller fills in phase, steps and what describes the steps.
  KernelProfile Stop();

 private:
  torch::Device device_;
  bool active_ = false;
  std::chrono::steady_clock::time_point start_;
};

// Writes `<phase>.json` for each profile and summary.txt (all of them, readable) into `dir`
// (created when missing), each file atomically. data::FileWriteError on failure.
void WriteProfileFiles(const std::filesystem::path& dir, const std::vector<KernelProfile>& profiles);

}  // namespace iisan::train
