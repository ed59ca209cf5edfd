// The eager step: forward, backward and Adam as LibTorch calls. The warm-up steps after the
// first are timed phase by phase (with device synchronisation), which leaves the steady-state
// measurement of the trainer untouched.
#include <chrono>

#include <glog/logging.h>
#include <torch/torch.h>

#include "core/train/device_stats.h"
#include "core/train/step_engine.h"
#include "core/train/trainer.h"

namespace iisan::train {
namespace {

using Clock = std::chrono::steady_clock;

class EagerStep final : public StepEngine {
 public:
  explicit EagerStep(const StepContext& context) : c_(context) {}

  const char* name() const override { return "eager"; }

  void BeginEpoch(int64_t warmup) override {
    warmup_ = warmup;
    step_ = 0;
    forward_ = backward_ = optimizer_ = 0.0;
    profiled_ = 0;
  }

  void Step(std::span<const int64_t> users) override {
    const auto batch = TrainingBatch(*c_.dataset, users);
    const bool profile = step_ >= 1 && step_ < warmup_;
    ++step_;
    const auto& device = c_.options->device;
    auto since = Clock::now();
    auto mark = [&](double& total) {
      if (!profile) return;
      SynchronizeDevice(device);
      const auto now = Clock::now();
      total += std::chrono::duration<double>(now - since).count();
      since = now;
    };
    auto loss = c_.model->Loss(batch, c_.log_popularity);
    mark(forward_);
    c_.optimizer->Backward(loss);
    mark(backward_);
    c_.optimizer->Step();
    c_.loss->Add(loss);
    mark(optimizer_);
    profiled_ += profile;
  }

  StepEngineStats EndEpoch() override {
    if (profiled_ > 0) {
      LOG(INFO) << "step phases (mean of " << profiled_ << " synchronised warm-up steps): forward with batch gather "
                << 1e3 * forward_ / profiled_ << " ms, backward " << 1e3 * backward_ / profiled_ << " ms, optimizer "
                << 1e3 * optimizer_ / profiled_ << " ms";
    }
    return {};
  }

 private:
  StepContext c_;
  int64_t warmup_ = 0, step_ = 0, profiled_ = 0;
  double forward_ = 0.0, backward_ = 0.0, optimizer_ = 0.0;
};

}  // namespace

std::unique_ptr<StepEngine> MakeEagerStep(const StepContext& context) { return std::make_unique<EagerStep>(context); }

}  // namespace iisan::train
