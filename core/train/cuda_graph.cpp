// CUDA graph capture and replay of a training step.
#include "core/train/cuda_graph.h"

#include <stdexcept>

#if defined(IISAN_WITH_CUDA)
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace iisan::train {

#if defined(IISAN_WITH_CUDA)

struct CudaGraphStep::State {
  explicit State(c10::DeviceIndex index) : stream(c10::cuda::getStreamFromPool(false, index)) {}
  c10::cuda::CUDAStream stream;
  at::cuda::CUDAGraph graph;
  bool captured = false;

  // Runs `body` on the side stream, ordered after and before the current stream's work.
  void OnSideStream(const std::function<void()>& body) {
    auto current = c10::cuda::getCurrentCUDAStream(stream.device_index());
    at::cuda::CUDAEvent before;
    before.record(current);
    before.block(stream);
    {
      c10::cuda::CUDAStreamGuard guard(stream);
      body();
    }
    at::cuda::CUDAEvent after;
    after.record(stream);
    after.block(current);
  }
};

bool CudaGraphStep::Supported() { return true; }

CudaGraphStep::CudaGraphStep(const torch::Device& device) {
  if (!device.is_cuda()) throw std::invalid_argument("CudaGraphStep needs a CUDA device");
  state_ = std::make_unique<State>(device.has_index() ? device.index() : c10::cuda::current_device());
}

void CudaGraphStep::Warmup(const std::function<void()>& step) { state_->OnSideStream(step); }

void CudaGraphStep::Capture(const std::function<void()>& step, const CudaGraphStep* share_pool_with) {
  if (share_pool_with && !share_pool_with->captured()) {
    throw std::logic_error("CudaGraphStep: a graph can only share the pool of a captured graph");
  }
  state_->OnSideStream([&] {
    if (share_pool_with) {
      state_->graph.capture_begin(share_pool_with->state_->graph.pool());
    } else {
      state_->graph.capture_begin();
    }
    try {
      step();
    } catch (...) {
      try {
        state_->graph.capture_end();
      } catch (...) {
      }
      throw;
    }
    state_->graph.capture_end();
  });
  state_->captured = true;
}

void CudaGraphStep::Replay() { state_->graph.replay(); }

bool CudaGraphStep::captured() const { return state_->captured; }

#else

struct CudaGraphStep::State {};
bool CudaGraphStep::Supported() { return false; }
CudaGraphStep::CudaGraphStep(const torch::Device&) {
  throw std::runtime_error("CUDA graphs need a LibTorch built with CUDA");
}
void CudaGraphStep::Warmup(const std::function<void()>&) {}
void CudaGraphStep::Capture(const std::function<void()>&, const CudaGraphStep*) {}
void CudaGraphStep::Replay() {}
bool CudaGraphStep::captured() const { return false; }

#endif

CudaGraphStep::~CudaGraphStep() = default;

}  // namespace iisan::train
