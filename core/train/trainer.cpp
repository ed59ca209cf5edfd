// The epoch loop: steps through the step engine, validation after every epoch, the best epoch's
// test metrics, early stopping, the callbacks' stop and cancel, the run's timing, and the
// profiling windows of TrainOptions::profile_steps.
#include "core/train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>

#include <glog/logging.h>
#include <torch/torch.h>

#include "core/data/progress.h"
#include "core/models/param_count.h"

namespace iisan::train {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

double LearningRateOf(models::OptimizerGroup group, const LearningRates& lr) {
  switch (group) {
    case models::OptimizerGroup::kRecsys: return lr.recsys;
    case models::OptimizerGroup::kText: return lr.text;
    case models::OptimizerGroup::kImage: return lr.image;
    case models::OptimizerGroup::kAdapterText: return lr.adapter_text;
    case models::OptimizerGroup::kAdapterImage: return lr.adapter_image;
  }
  return lr.recsys;
}

// Adam over the reference's optimizer groups; parameter names decide the group.
std::unique_ptr<FlatAdam> MakeOptimizer(Recommender& model, const LearningRates& lr) {
  std::map<models::OptimizerGroup, std::vector<torch::Tensor>> grouped;
  for (auto& [name, tensor] : models::NamedTrainableParameters(*model)) {
    grouped[model->GroupOf(name)].push_back(tensor);
  }
  std::vector<FlatAdam::Group> groups;
  for (auto& [group, params] : grouped) groups.push_back({params, LearningRateOf(group, lr)});
  return std::make_unique<FlatAdam>(std::move(groups));
}

}  // namespace

void CheckProfileSteps(const TrainOptions& options, int64_t users) {
  if (options.profile_steps < 0) throw std::invalid_argument("train.profile_steps must not be negative");
  if (options.profile_steps == 0) return;
  int64_t epoch_steps = (users + options.batch_size - 1) / options.batch_size;
  const bool capped = options.max_steps_per_epoch > 0;
  if (capped) epoch_steps = std::min(epoch_steps, options.max_steps_per_epoch);
  if (epoch_steps > kProfileSkipSteps) return;
  throw std::invalid_argument(
      "train.profile_steps=" + std::to_string(options.profile_steps) + ": profiling starts at an epoch's step " +
      std::to_string(kProfileSkipSteps + 1) + ", after the warm-up, but an epoch has " + std::to_string(epoch_steps) +
      " steps (" + std::to_string(users) + " users, batch " + std::to_string(options.batch_size) +
      (capped ? ", train.max_steps_per_epoch " + std::to_string(options.max_steps_per_epoch) : std::string()) +
      "); lower train.batch_size" + (capped ? " or raise train.max_steps_per_epoch" : ""));
}

std::vector<int64_t> SeededPermutation(int64_t n, uint64_t seed) {
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  uint64_t state = seed;
  for (int64_t i = n - 1; i > 0; --i) {
    const int64_t j = static_cast<int64_t>(SplitMix64(state) % static_cast<uint64_t>(i + 1));
    std::swap(order[i], order[j]);
  }
  return order;
}

Trainer::Trainer(const data::Dataset& dataset, Recommender model, TrainOptions options, DataParallel* parallel)
    : dataset_(dataset),
      model_(std::move(model)),
      options_(std::move(options)),
      parallel_(parallel),
      epoch_loss_(options_.device) {
  if (parallel_ && parallel_->world_size() <= 1) parallel_ = nullptr;
  if (options_.batch_size < 1 || options_.eval.batch_size < 1) {
    throw std::invalid_argument("Trainer: batch sizes must be at least 1");
  }
  EvaluationChunkUsers(options_.eval, 1);  // refuses an eval.memory_mb out of range before any training
  if (options_.device.is_cuda()) {
    at::globalContext().setAllowTF32CuBLAS(options_.tf32);
    at::globalContext().setAllowTF32CuDNN(options_.tf32);
  }
  progress_.result.best_valid = RankingMetrics(options_.eval.ks);
  progress_.result.test = RankingMetrics(options_.eval.ks);
  if (!SameDevice(model_->device(), options_.device)) {
    throw std::logic_error("Trainer: the model was prepared for " + model_->device().str() + " but training runs on " +
                           options_.device.str());
  }
  std::vector<float> log_pop(dataset_.popularity.size());
  for (size_t i = 0; i < log_pop.size(); ++i) {
    // Items never seen in training have p = 0; clamp so that the correction stays finite.
    log_pop[i] = static_cast<float>(std::log(std::max(dataset_.popularity[i], 1e-12)));
  }
  log_popularity_ = torch::tensor(log_pop).to(options_.device);
  valid_set_ = MakeEvaluationSet(dataset_, Split::kValid, options_.eval, options_.device, parallel_);
  test_set_ = MakeEvaluationSet(dataset_, Split::kTest, options_.eval, options_.device, parallel_);
  optimizer_ = MakeOptimizer(model_, options_.lr);
  StepContext context;
  context.dataset = &dataset_;
  context.model = model_;
  context.optimizer = optimizer_.get();
  context.log_popularity = log_popularity_;
  context.loss = &epoch_loss_;
  context.options = &options_;
  engine_ = MakeStepEngine(context, parallel_);
  CheckProfileSteps(options_, dataset_.num_users());
  if (options_.profile_steps > 0) {
    profiler_ = std::make_unique<KernelProfiler>(options_.device);
    profile_stage_ = ProfileStage::kSteps;
  }
}

Trainer::~Trainer() = default;

int64_t Trainer::trainable_parameters() const { return models::CountParameters(*model_).trainable; }

RankingMetrics Trainer::Evaluate(Split split) {
  return EvaluateModel(model_, split == Split::kValid ? valid_set_ : test_set_, options_.eval, parallel_);
}

bool Trainer::CancelRequested(const std::atomic<bool>* cancel, int64_t step, int64_t first_step) {
  if (cancel == nullptr) return false;
  if (!parallel_) return cancel->load(std::memory_order_relaxed);
  // Every rank must stop at the same step: they agree at fixed steps, all or none.
  if (step == first_step || (step - first_step) % kCancelAgreementSteps != 0) return false;
  return parallel_->Sum(cancel->load(std::memory_order_relaxed) ? 1.0 : 0.0) > 0.0;
}

void Trainer::FinishProfile(KernelProfile profile, const FitCallbacks& callbacks) {
  LOG(INFO) << "profile (train.profile_steps), top 10 of " << profile.kernels.size() << " rows:\n" << profile.Top(10);
  if (callbacks.on_profile) callbacks.on_profile(profile);
  profile_stage_ = profile_stage_ == ProfileStage::kSteps ? ProfileStage::kEval : ProfileStage::kDone;
}

bool Trainer::TrainEpoch(EpochRecord& record, const FitCallbacks& callbacks) {
  const std::atomic<bool>* cancel = callbacks.cancel;
  auto& p = progress_;
  model_->train();
  const int64_t users = dataset_.num_users();
  const auto order = SeededPermutation(users, options_.seed + static_cast<uint64_t>(record.epoch));
  record.full_epoch_steps = (users + options_.batch_size - 1) / options_.batch_size;
  int64_t num_batches = record.full_epoch_steps;
  if (options_.max_steps_per_epoch > 0) num_batches = std::min(num_batches, options_.max_steps_per_epoch);
  const int64_t first = p.next_step;  // > 0 when resuming in the middle of this epoch
  epoch_loss_.Begin(first);            // after a resume, on top of the steps before
  // The first steps carry one-time costs (allocator growth, kernel selection); the steady rate
  // is timed after them, with one device synchronisation at each end of that window.
  const int64_t warmup = std::min<int64_t>(5, (num_batches - first) / 4);
  const int64_t steady_from = first + warmup;
  engine_->BeginEpoch(warmup);
  // train.profile_steps: a window of steps once the engine is warm (its CUDA graph captured).
  int64_t profile_from = -1, profile_to = -1;
  if (profile_stage_ == ProfileStage::kSteps && num_batches - first > kProfileSkipSteps) {
    profile_from = first + kProfileSkipSteps;
    profile_to = std::min(num_batches, profile_from + options_.profile_steps);
    if (profile_to - profile_from < options_.profile_steps) {
      LOG(WARNING) << "train.profile_steps=" << options_.profile_steps << ": epoch " << record.epoch << " ends after "
                   << profile_to - profile_from << " profiled steps";
    }
  }

  GpuUtilizationSampler utilization(options_.device);
  utilization.Start();
  const auto start = Clock::now();
  Clock::time_point steady_start = start;
  data::ProgressMeter progress("epoch " + std::to_string(record.epoch) + " train",
                               (num_batches - first) * options_.batch_size, "users");
  for (int64_t b = first; b < num_batches; ++b) {
    if (CancelRequested(cancel, b, first)) {
      SynchronizeDevice(options_.device);
      utilization.Stop();
      engine_->EndEpoch();
      // Before an epoch's first step, the state is the previous epoch's end.
      p.epoch_in_flight = b > 0 ? record.epoch : 0;
      p.next_step = b;
      p.partial_train_seconds = b > 0 ? p.partial_train_seconds + SecondsSince(start) : 0.0;
      if (profiler_ && profiler_->active()) {
        profiler_.reset();  // closes the window, dropping its events
        profile_stage_ = ProfileStage::kDone;
        LOG(INFO) << "train.profile_steps: the run was cancelled inside the profiled steps; no profile written";
      }
      LOG(INFO) << "cancelled in epoch " << record.epoch << " before step " << b << " of " << num_batches;
      return false;
    }
    if (b == steady_from) {
      SynchronizeDevice(options_.device);
      steady_start = Clock::now();
    }
    const int64_t begin = b * options_.batch_size;
    const int64_t end = std::min(users, begin + options_.batch_size);
    if (b == profile_from) profiler_->Start();
    engine_->Step(std::span<const int64_t>(order.data() + begin, static_cast<size_t>(end - begin)));
    if (b + 1 == profile_to) {
      auto profile = profiler_->Stop();
      profile.phase = "train_steps";
      profile.step_engine = engine_->name();
      profile.step_name = "training step";
      profile.epoch = record.epoch;
      profile.first_step = profile_from;
      profile.steps = profile_to - profile_from;
      if (profile.step_engine == "cuda graph") {
        profile.note = profile.kernel_calls > 0
            ? "the steps were CUDA graph replays; CUPTI recorded the graph's kernels one by one"
            : "the steps were CUDA graph replays and CUPTI recorded none of the graph's kernels; "
              "train.cuda_graph=false profiles the same step run eagerly, kernel by kernel";
      }
      FinishProfile(std::move(profile), callbacks);
    }
    progress.Advance(end - begin);
    if (callbacks.after_step) callbacks.after_step(record.epoch, b + 1);
  }
  SynchronizeDevice(options_.device);
  const auto stop = Clock::now();
  utilization.Stop();
  progress.Finish();
  const auto stats = engine_->EndEpoch();
  record.train_steps = num_batches;
  record.train_seconds = std::chrono::duration<double>(stop - start).count() + p.partial_train_seconds;
  const int64_t steady_steps = num_batches - steady_from;
  record.steady_seconds_per_step = steady_steps > 0
      ? std::chrono::duration<double>(stop - steady_start).count() / static_cast<double>(steady_steps) : 0.0;
  record.gpu_utilization = utilization.Mean();
  double loss_total = epoch_loss_.sum().item<double>();
  if (parallel_) {
    loss_total = parallel_->Sum(loss_total);  // each rank holds its share of every step's loss
    const int64_t run = num_batches - first;
    record.allreduce_bytes_per_step = run ? stats.comm_bytes / run : 0;
    record.allreduce_ms_per_step = run ? 1e3 * stats.comm_seconds / static_cast<double>(run) : 0.0;
  }
  record.train_loss = num_batches ? loss_total / static_cast<double>(num_batches) : 0.0;
  p.epoch_in_flight = 0;
  p.next_step = 0;
  p.partial_train_seconds = 0.0;
  if (!std::isfinite(record.train_loss)) {
    // Every rank knows the summed loss is not finite, so all of them take part in this collective.
    const int64_t step = epoch_loss_.FirstNonFiniteStep(parallel_);
    const std::string where =
        step >= 0 ? "first at step " + std::to_string(step + 1) + " of " + std::to_string(num_batches)
                  : "every step's loss was finite, their sum overflowed";
    throw std::runtime_error("epoch " + std::to_string(record.epoch) + ": the training loss is not finite (" +
                             std::to_string(record.train_loss) + "; " + where + "); the run diverged. Lower the "
                             "learning rate (train.lr.*); the checkpoints of earlier epochs are kept");
  }
  return true;
}

TrainResult Trainer::Fit(const std::function<void(const EpochRecord&)>& observe) {
  FitCallbacks callbacks;
  callbacks.on_epoch = [&](const EpochRecord& record) {
    if (observe) observe(record);
    return EpochDecision::kContinue;
  };
  return Fit(callbacks);
}

TrainResult Trainer::Fit(const FitCallbacks& callbacks) {
  auto& p = progress_;
  auto& result = p.result;
  ResetPeakMemory(options_.device);
  // The peak, split into the phases it can come from (CUDA only): each epoch's training and its
  // evaluation passes are windows of their own, and the run's peak is the largest window's.
  const std::optional<int64_t> resident = AllocatedMemory(options_.device);
  int64_t train_peak = 0, eval_peak = 0;
  auto close_window = [&](int64_t& peak) {
    if (!resident) return;
    peak = std::max(peak, MeasurePeakMemory(options_.device).bytes);
    ResetPeakMemory(options_.device);
  };
  if (parallel_) {
    torch::NoGradGuard no_grad;
    parallel_->Broadcast(models::TrainableParameters(*model_));  // every rank starts from rank 0's weights
  }
  result.status = RunStatus::kCompleted;
  if (result.epochs_run > 0 && p.bad_epochs > options_.patience) result.status = RunStatus::kEarlyStopped;
  const int first_epoch = p.epoch_in_flight > 0 ? p.epoch_in_flight : result.epochs_run + 1;
  for (int epoch = first_epoch; epoch <= options_.epochs && result.status == RunStatus::kCompleted; ++epoch) {
    EpochRecord record;
    record.epoch = epoch;
    const bool trained_epoch = TrainEpoch(record, callbacks);
    close_window(train_peak);
    if (!trained_epoch) {
      result.status = RunStatus::kCancelled;
      break;
    }

    auto start = Clock::now();
    const bool profile_eval = profile_stage_ == ProfileStage::kEval;
    if (profile_eval) profiler_->Start();
    record.valid = Evaluate(Split::kValid);
    if (profile_eval) {
      auto profile = profiler_->Stop();
      profile.phase = "eval";
      profile.step_engine = "eager";  // evaluation never runs as a CUDA graph
      profile.step_name = "evaluation batch";
      profile.epoch = epoch;
      // The chunks the pass ran in: eval.memory_mb sizes them, eval.batch_size only caps them.
      profile.steps = EvaluationChunks(model_->config(), valid_set_, options_.eval);
      FinishProfile(std::move(profile), callbacks);
    }
    record.valid_seconds = SecondsSince(start);
    const double hr = record.valid.hr(options_.selection_k);
    if (hr > p.best_hr) {
      p.best_hr = hr;
      p.bad_epochs = 0;
      record.best = true;
      record.test = Evaluate(Split::kTest);
      result.best_epoch = epoch;
      result.best_valid = record.valid;
      result.test = *record.test;
    } else {
      ++p.bad_epochs;
    }
    record.eval_seconds = SecondsSince(start);
    close_window(eval_peak);
    p.train_total += record.train_seconds;
    if (epoch > 1) p.later_train_total += record.train_seconds;
    p.eval_total += record.eval_seconds;
    p.valid_total += record.valid_seconds;
    p.steady_total += record.steady_seconds_per_step;
    if (record.gpu_utilization) p.utilization_total += *record.gpu_utilization, ++p.utilization_epochs;
    p.truncated |= record.train_steps < record.full_epoch_steps;
    result.epochs_run = epoch;
    result.full_epoch_steps = record.full_epoch_steps;
    result.steps_measured += record.train_steps;

    LOG(INFO) << "epoch " << epoch << ": loss " << record.train_loss << ", valid HR@"
              << options_.selection_k << " " << hr << ", NDCG@" << options_.selection_k << " "
              << record.valid.ndcg(options_.selection_k) << (record.best ? " (best)" : "") << ", "
              << record.train_seconds << " s train (" << record.train_steps << " steps, "
              << record.steady_seconds_per_step << " s/step steady), " << record.eval_seconds << " s eval";
    const auto decision = callbacks.on_epoch ? callbacks.on_epoch(record) : EpochDecision::kContinue;
    if (p.bad_epochs > options_.patience) {
      LOG(INFO) << "early stop: no new best validation HR@" << options_.selection_k << " for "
                << p.bad_epochs << " epochs";
      result.status = RunStatus::kEarlyStopped;
    } else if (decision == EpochDecision::kStop) {
      LOG(INFO) << "stopped after epoch " << epoch << " by the caller";
      result.status = RunStatus::kStopped;
    }
  }
  const bool trained = result.epochs_run >= first_epoch;
  if (profile_stage_ == ProfileStage::kSteps && trained && result.status != RunStatus::kCancelled) {
    LOG(WARNING) << "train.profile_steps: nothing was profiled; no epoch of this run had more than "
                 << kProfileSkipSteps << " steps left to train";
  }
  TrainResult out = result;
  const double epochs = std::max(1, out.epochs_run);
  out.mean_train_seconds = p.train_total / epochs;
  out.mean_eval_seconds = p.eval_total / epochs;
  out.valid_seconds_per_epoch = p.valid_total / epochs;
  out.train_epoch_extrapolated = p.truncated;
  if (p.truncated) {
    out.train_seconds_per_epoch = p.steady_total / epochs * static_cast<double>(out.full_epoch_steps);
  } else {
    out.train_seconds_per_epoch = out.epochs_run > 1 ? p.later_train_total / (epochs - 1) : p.train_total;
  }
  if (p.utilization_epochs > 0) out.gpu_utilization = p.utilization_total / p.utilization_epochs;
  out.peak_memory = MeasurePeakMemory(options_.device);
  if (resident) {
    out.peak_memory.bytes = std::max({out.peak_memory.bytes, train_peak, eval_peak});
    out.memory_phases = {{"resident", *resident}, {"train_peak", train_peak}, {"eval_peak", eval_peak}};
  }
  return out;
}

}  // namespace iisan::train
