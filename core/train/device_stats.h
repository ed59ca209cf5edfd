// What the efficiency comparison measures besides time (IISAN.md §7.1): peak device memory
// (the CUDA caching allocator's peak on GPU, the process's peak RSS on CPU) and GPU
// utilisation; and bf16 autocast for the backbones' forward passes on GPU.
#pragma once

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <thread>

#include <torch/types.h>

namespace iisan::train {

// While alive on a CUDA device: ops run under autocast to bf16 (matmuls and convolutions in
// bf16, reductions and norms in fp32), as torch.autocast(dtype=torch.bfloat16). A no-op on CPU
// (and with a LibTorch older than 2.0).
class AutocastGuard {
 public:
  explicit AutocastGuard(const torch::Device& device);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool active_ = false;
  bool previous_enabled_ = false;
  c10::ScalarType previous_dtype_ = c10::ScalarType::Undefined;
};

// Waits for the device's queued work (no-op on CPU).
void SynchronizeDevice(const torch::Device& device);

// The state of the default random generator of `device`'s type (the CPU's, or that CUDA
// device's), as torch serialises it, and setting it back: what dropout draws, for exact resume.
// std::runtime_error for a CUDA device in a build without CUDA.
torch::Tensor GeneratorState(const torch::Device& device);
void SetGeneratorState(const torch::Device& device, const torch::Tensor& state);

// Starts a new peak-memory window on a CUDA device (no-op on CPU).
void ResetPeakMemory(const torch::Device& device);

struct PeakMemory {
  int64_t bytes = 0;
  std::string kind;  // "cuda allocator peak" or "host peak RSS"
};
// The CUDA caching allocator's peak allocated bytes since the last reset on a CUDA device;
// the process's peak resident set size on CPU.
PeakMemory MeasurePeakMemory(const torch::Device& device);

// The CUDA caching allocator's allocated bytes now on a CUDA device; nullopt on the CPU, whose
// resident set has no such reading.
std::optional<int64_t> AllocatedMemory(const torch::Device& device);

// Samples the GPU's utilisation (NVML, loaded at run time) every 100 ms between Start and
// Stop; Mean is unset where NVML or the device is unavailable (CPU runs, no driver).
class GpuUtilizationSampler {
 public:
  explicit GpuUtilizationSampler(const torch::Device& device);
  ~GpuUtilizationSampler();
  void Start();
  void Stop();
  std::optional<double> Mean() const;  // fraction in [0, 1]

 private:
  void* device_handle_ = nullptr;
  std::thread thread_;
  std::atomic<bool> running_{false};
  std::atomic<int64_t> samples_{0};
  std::atomic<int64_t> busy_percent_sum_{0};
};

}  // namespace iisan::train
