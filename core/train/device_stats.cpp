// Peak memory, GPU utilisation and autocast. CUDA-only parts compile where LibTorch has CUDA
// (IISAN_WITH_CUDA); NVML is opened with dlopen so that no build depends on the driver.
#include "core/train/device_stats.h"

#include <dlfcn.h>
#include <sys/resource.h>

#include <chrono>
#include <mutex>
#include <stdexcept>

#include <ATen/CPUGeneratorImpl.h>
#include <glog/logging.h>
#include <torch/version.h>

#if defined(IISAN_WITH_CUDA)
#include <ATen/autocast_mode.h>
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#define IISAN_AUTOCAST (TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4))
#else
#define IISAN_AUTOCAST 0
#endif

namespace iisan::train {

AutocastGuard::AutocastGuard(const torch::Device& device) {
#if IISAN_AUTOCAST
  if (!device.is_cuda()) return;
  active_ = true;
  previous_enabled_ = at::autocast::is_autocast_enabled(at::kCUDA);
  previous_dtype_ = at::autocast::get_autocast_dtype(at::kCUDA);
  at::autocast::set_autocast_enabled(at::kCUDA, true);
  at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
  at::autocast::increment_nesting();
#else
  (void)device;
#endif
}

AutocastGuard::~AutocastGuard() {
#if IISAN_AUTOCAST
  if (!active_) return;
  // The weight casts autocast caches are released when the outermost region ends.
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  at::autocast::set_autocast_enabled(at::kCUDA, previous_enabled_);
  at::autocast::set_autocast_dtype(at::kCUDA, previous_dtype_);
#endif
}

void SynchronizeDevice(const torch::Device& device) {
#if defined(IISAN_WITH_CUDA)
  if (device.is_cuda()) c10::cuda::device_synchronize();
#else
  (void)device;
#endif
}

namespace {

// A handle on the default generator: copies share it.
at::Generator DefaultGenerator(const torch::Device& device) {
  if (!device.is_cuda()) return at::detail::getDefaultCPUGenerator();
#if defined(IISAN_WITH_CUDA)
  return at::cuda::detail::getDefaultCUDAGenerator(device.has_index() ? device.index() : c10::cuda::current_device());
#else
  throw std::runtime_error("this build has no CUDA: there is no generator of " + device.str());
#endif
}

}  // namespace

torch::Tensor GeneratorState(const torch::Device& device) {
  auto generator = DefaultGenerator(device);
  std::lock_guard<std::mutex> lock(generator.mutex());
  return generator.get_state();
}

void SetGeneratorState(const torch::Device& device, const torch::Tensor& state) {
  auto generator = DefaultGenerator(device);
  std::lock_guard<std::mutex> lock(generator.mutex());
  generator.set_state(state);
}

void ResetPeakMemory(const torch::Device& device) {
#if defined(IISAN_WITH_CUDA)
  if (device.is_cuda()) {
    c10::cuda::CUDACachingAllocator::resetPeakStats(device.has_index() ? device.index() : c10::cuda::current_device());
  }
#else
  (void)device;
#endif
}

PeakMemory MeasurePeakMemory(const torch::Device& device) {
#if defined(IISAN_WITH_CUDA)
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(
        device.has_index() ? device.index() : c10::cuda::current_device());
    // Index 0 is StatType::AGGREGATE (all pools).
    return {stats.allocated_bytes[0].peak, "cuda allocator peak"};
  }
#endif
  (void)device;
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return {static_cast<int64_t>(usage.ru_maxrss) * 1024, "host peak RSS"};  // ru_maxrss is in KiB
}

std::optional<int64_t> AllocatedMemory(const torch::Device& device) {
#if defined(IISAN_WITH_CUDA)
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(
        device.has_index() ? device.index() : c10::cuda::current_device());
    return stats.allocated_bytes[0].current;
  }
#endif
  (void)device;
  return std::nullopt;
}

namespace {

// The few NVML entry points the sampler needs (nvml.h is not required at build time).
struct Nvml {
  using Init = int (*)();
  using HandleByIndex = int (*)(unsigned int, void**);
  struct Utilization {
    unsigned int gpu;
    unsigned int memory;
  };
  using UtilizationRates = int (*)(void*, Utilization*);
  Init init = nullptr;
  HandleByIndex handle_by_index = nullptr;
  UtilizationRates utilization = nullptr;
  bool ok = false;
};

const Nvml& LoadNvml() {
  static const Nvml nvml = [] {
    Nvml out;
    void* library = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!library) return out;
    out.init = reinterpret_cast<Nvml::Init>(dlsym(library, "nvmlInit_v2"));
    out.handle_by_index = reinterpret_cast<Nvml::HandleByIndex>(dlsym(library, "nvmlDeviceGetHandleByIndex_v2"));
    out.utilization = reinterpret_cast<Nvml::UtilizationRates>(dlsym(library, "nvmlDeviceGetUtilizationRates"));
    out.ok = out.init && out.handle_by_index && out.utilization && out.init() == 0;
    return out;
  }();
  return nvml;
}

}  // namespace

GpuUtilizationSampler::GpuUtilizationSampler(const torch::Device& device) {
  if (!device.is_cuda()) return;
  const auto& nvml = LoadNvml();
  if (!nvml.ok) {
    LOG(WARNING) << "NVML (libnvidia-ml.so.1) is unavailable: GPU utilisation is not recorded";
    return;
  }
  // NVML counts all GPUs; with CUDA_VISIBLE_DEVICES set, CUDA's index may differ from NVML's.
  const unsigned index = device.has_index() ? static_cast<unsigned>(device.index()) : 0u;
  if (nvml.handle_by_index(index, &device_handle_) != 0) device_handle_ = nullptr;
}

GpuUtilizationSampler::~GpuUtilizationSampler() { Stop(); }

void GpuUtilizationSampler::Start() {
  if (!device_handle_ || running_) return;
  running_ = true;
  thread_ = std::thread([this] {
    const auto& nvml = LoadNvml();
    while (running_) {
      Nvml::Utilization rates{};
      if (nvml.utilization(device_handle_, &rates) == 0) {
        busy_percent_sum_ += rates.gpu;
        ++samples_;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
}

void GpuUtilizationSampler::Stop() {
  running_ = false;
  if (thread_.joinable()) thread_.join();
}

std::optional<double> GpuUtilizationSampler::Mean() const {
  if (samples_ == 0) return std::nullopt;
  return static_cast<double>(busy_percent_sum_) / (100.0 * static_cast<double>(samples_));
}

}  // namespace iisan::train
