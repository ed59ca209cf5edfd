// One training step captured as a CUDA graph and replayed: for a small model such as IISAN's
// side network on cached states, launching a thousand tiny kernels from the CPU costs more than
// running them, and a replay launches them all at once. The step must read its inputs from
// fixed device buffers and must not synchronise with the host. Available where LibTorch has
// CUDA (IISAN_WITH_CUDA); elsewhere Supported() is false and the other calls throw.
#pragma once

#include <functional>
#include <memory>

#include <torch/types.h>

namespace iisan::train {

class CudaGraphStep {
 public:
  static bool Supported();

  explicit CudaGraphStep(const torch::Device& device);
  ~CudaGraphStep();

  // Runs `step` once eagerly on a side stream (warm-up: allocations, library handles, lazy
  // initialisation must happen outside a capture).
  void Warmup(const std::function<void()>& step);
  // Records `step` (without running it). With `share_pool_with` (already captured) the graph
  // allocates from that graph's memory pool: graphs of one training loop that are replayed one
  // at a time, never concurrently, can reuse each other's intermediate memory.
  void Capture(const std::function<void()>& step, const CudaGraphStep* share_pool_with = nullptr);
  void Replay();
  bool captured() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace iisan::train
