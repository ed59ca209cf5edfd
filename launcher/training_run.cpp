// RunTraining: world, cache, model, run directory, trainer, checkpoints, summary.
#include "launcher/training_run.h"

#include <glog/logging.h>
#include <torch/torch.h>

#include "core/models/param_count.h"
#include "core/train/checkpoint.h"
#include "core/train/evaluation.h"
#include "core/train/method.h"
#include "distributed/process_group.h"
#include "distributed/rank_log.h"
#include "distributed/rendezvous.h"
#include "distributed/trainer_parallel.h"
#include "launcher/cache_ranks.h"
#include "launcher/run_dir.h"

namespace iisan::launcher {
namespace {

// A resumed run must be the same run: its model, data, cached states' dtype (cache.dtype, as
// resolved: its default differs by device) and seed as stored.
void CheckSameRun(const std::filesystem::path& run_dir, const Json& stored_json, const Config& config) {
  const Config stored = ConfigFromJson(stored_json, (run_dir / "config.json").string());
  if (stored.model == config.model && stored.data == config.data && stored.cache.dtype == config.cache.dtype &&
      stored.seed == config.seed) {
    return;
  }
  // Name the first key that differs ("/model/embedding_dim" in the flattened documents).
  const auto a = ConfigToJson(stored).flatten(), b = ConfigToJson(config).flatten();
  for (const auto& [pointer, value] : b.items()) {
    if (pointer.rfind("/model/", 0) != 0 && pointer.rfind("/data/", 0) != 0 && pointer != "/cache/dtype" &&
        pointer != "/seed") {
      continue;
    }
    if (a.contains(pointer) && a[pointer] == value) continue;
    throw ConfigError("train.resume: config key " + pointer.substr(1) + " is " + value.dump() + " but the run in " +
                      run_dir.string() + " used " + (a.contains(pointer) ? a[pointer].dump() : "nothing") +
                      "; a resumed run must keep its model, data, cache.dtype and seed (change train.epochs or "
                      "train.patience only)");
  }
}

}  // namespace

TrainingOutcome RunTraining(Job job, const TrainingCallbacks& callbacks, StartupClock* startup) {
  StartupClock own_clock;
  StartupClock& clock = startup ? *startup : own_clock;
  // mpirun, srun or `iisan launch` make this process one rank of a data-parallel job; nothing
  // set is a world of one, anything partial is an error (never a silent world of one).
  const auto world = distributed::ResolveWorld({}, distributed::ProcessEnvironment());
  auto& config = job.config;
  std::optional<distributed::ProcessGroup> group;
  std::unique_ptr<distributed::RankLogPrefix> log_prefix;
  if (world.world_size > 1) {
    log_prefix = std::make_unique<distributed::RankLogPrefix>(world.rank, world.world_size);
    job.train_options.device = distributed::LocalDevice(world, job.train_options.device);
    job.cache_options.device = job.train_options.device;
    distributed::CollectiveOptions collective;
    collective.timeout = std::chrono::milliseconds(static_cast<int64_t>(1000.0 * config.train.collective_timeout_s));
    group = distributed::JoinProcessGroup(world, job.train_options.device, collective);
    LOG(INFO) << "data-parallel job: " << world.Describe();
    // The ranks build a missing cache together (each its share of the chunks).
    if (!train::UsesLiveBackbones(job.method)) EnsureCacheFileOnRanks(job, *group);
    clock.Mark("process group and cache check");
  }
  TrainingOutcome outcome;
  outcome.lead = world.rank == 0;
  const bool lead = outcome.lead;
  auto model = BuildModel(job, &clock);

  // checkpoints/last holds 12 bytes per trainable parameter (weights and two Adam moments):
  // about 49 MB for IISAN, 2.3 GB for FFT at base size; 0 writes none (and nothing to resume).
  const int checkpoint_every = config.train.checkpoint_every;
  const std::string& mode = config.train.resume;
  if (mode != "false" && config.name.empty()) {
    throw ConfigError("train.resume=" + mode + " needs --set name=...: the name of the run to continue");
  }
  if (config.name.empty()) {
    if (world.world_size > 1) {
      throw ConfigError("a data-parallel run needs --set name=...: every rank must agree on the run directory");
    }
    config.name = TimestampedName("train");
  }
  const std::filesystem::path root = config.run_root;
  const auto run_path = root / config.name;
  const auto checkpoints = run_path / "checkpoints";
  // train.resume=auto: a finished run is left as it is; one with a resumable checkpoint
  // continues; one that left none starts again in its own directory; none starts.
  bool resume = mode == "true";
  bool restart = false;
  if (mode == "auto") {
    if (std::filesystem::exists(run_path / "summary.json")) {
      outcome.summary = train::RunSummary::Read(run_path.string());
      outcome.status = train::ParseRunStatus(outcome.summary.status);
      outcome.run_dir = run_path;
      LOG(INFO) << run_path.string() << " finished already (" << outcome.summary.status << "); nothing to do";
      return outcome;
    }
    resume = train::HasResumable(checkpoints);
    restart = !resume && std::filesystem::exists(run_path / "config.json");
    LOG(INFO) << "train.resume=auto: " << (resume ? "continuing " : restart ? "restarting (no checkpoint) " : "starting ")
              << run_path.string();
  }
  const Json stored_form = ConfigToJson(config);
  std::filesystem::path resume_from;  // the checkpoint folder a resumed run continues from
  std::optional<RunDirectory> run;
  if (lead) {
    if (resume || restart) {
      // Everything a resume needs is checked before the run directory is touched.
      run = RunDirectory::Reopen(root, config.name, stored_form, [&](const Json& stored) {
        CheckSameRun(run_path, stored, config);
        if (resume) resume_from = train::FindResumable(checkpoints);
      });
      if (restart) run->TruncateMetrics(0);
    } else {
      run = RunDirectory::Create(root, config.name, stored_form);
    }
    outcome.run_dir = run->path();
    google::SetLogDestination(google::GLOG_INFO, (run->log_dir() / "iisan.log.").string().c_str());
    LOG(INFO) << "run directory " << run->path() << ": " << train::MethodLabel(job.method) << ", "
              << job.dataset.num_users() << " users, " << job.dataset.num_items() << " items, batch "
              << job.train_options.batch_size << ", device " << job.train_options.device << ", "
              << world.world_size << " rank(s)";
  }

  std::unique_ptr<distributed::ProcessGroupParallel> parallel;
  if (group) {
    const auto bucket_bytes = static_cast<size_t>(config.train.bucket_mb * 1024.0 * 1024.0);
    parallel = std::make_unique<distributed::ProcessGroupParallel>(
        *group, job.train_options.device, models::TrainableParameters(*model), std::max<size_t>(bucket_bytes, 1));
  }
  clock.Mark("run directory");
  train::Trainer trainer(job.dataset, model, job.train_options, parallel.get());
  if (resume) {
    // Every rank reads the same files, so the ranks continue from one state.
    if (!lead) resume_from = train::FindResumable(checkpoints);
    train::ResumeFrom(resume_from, model, trainer, world.rank);
    if (lead) {
      run->TruncateMetrics(trainer.epochs_done());
      LOG(INFO) << "continuing " << run->path() << " from " << resume_from;
    }
  }
  clock.Mark(resume ? "trainer and checkpoint" : "trainer");
  const auto best_checkpoint = lead ? checkpoints / "best.safetensors" : std::filesystem::path();
  train::FitCallbacks fit;
  fit.cancel = callbacks.cancel;
  // The first step is timed to its end on the device: one synchronisation, once per run.
  fit.after_step = [&clock, device = job.train_options.device](int, int64_t) {
    if (clock.seconds_to_first_step()) return;
    train::SynchronizeDevice(device);
    clock.FirstStep();
  };
  fit.on_epoch = [&](const train::EpochRecord& record) {
    if (lead) {
      // The metrics line first: a kill before the checkpoint leaves a line that resuming drops.
      run->AppendMetrics(record.ToJson());
      if (record.best) train::SaveTrainableWeights(best_checkpoint, model);
    }
    // Every rank takes part: the others add their generator states.
    if (checkpoint_every > 0 && record.epoch % checkpoint_every == 0) {
      train::SaveResumable(checkpoints, model, trainer, parallel.get());
    }
    return callbacks.on_epoch ? callbacks.on_epoch(record) : train::EpochDecision::kContinue;
  };
  // train.profile_steps: every rank profiles (the ranks' steps stay alike), rank 0 writes
  // profile/, replacing what an earlier process of this run wrote there.
  std::vector<train::KernelProfile> profiles;
  fit.on_profile = [&](const train::KernelProfile& profile) {
    if (!lead) return;
    const auto dir = run->path() / "profile";
    if (profiles.empty()) std::filesystem::remove_all(dir);
    profiles.push_back(profile);
    train::WriteProfileFiles(dir, profiles);
    LOG(INFO) << "profile of " << profile.phase << " written to " << (dir / (profile.phase + ".json")).string();
  };
  const auto result = trainer.Fit(fit);
  outcome.status = result.status;
  if (result.status == train::RunStatus::kCancelled) {
    train::SaveResumable(checkpoints, model, trainer, parallel.get());
    if (lead) LOG(INFO) << "cancelled: " << (checkpoints / "last").string() << " continues the run (train.resume=auto)";
    return outcome;
  }
  if (!lead) return outcome;

  auto& summary = outcome.summary;
  summary.name = config.name;
  summary.method = train::MethodName(job.method);
  summary.method_label = train::MethodLabel(job.method);
  summary.modality = config.model.modality;
  summary.device = job.train_options.device.str();
  summary.status = train::RunStatusName(result.status);
  summary.batch_size = job.train_options.batch_size;
  summary.best_epoch = result.best_epoch;
  summary.epochs_run = result.epochs_run;
  summary.valid = result.best_valid;
  summary.test = result.test;
  summary.popularity_test = train::EvaluatePopularity(job.dataset, train::Split::kTest, job.train_options.eval);
  summary.trainable_parameters = trainer.trainable_parameters();
  summary.world_size = world.world_size;
  summary.measured_train_seconds_per_epoch = result.mean_train_seconds;
  summary.measured_eval_seconds_per_epoch = result.mean_eval_seconds;
  summary.train_seconds_per_epoch = result.train_seconds_per_epoch;
  summary.train_epoch_extrapolated = result.train_epoch_extrapolated;
  summary.train_steps_per_epoch = result.full_epoch_steps;
  summary.train_steps_measured = result.steps_measured;
  summary.eval_seconds_per_epoch = result.valid_seconds_per_epoch;
  summary.peak_memory_bytes = result.peak_memory.bytes;
  summary.peak_memory_kind = result.peak_memory.kind;
  summary.memory_phases = result.memory_phases;
  summary.gpu_utilization = result.gpu_utilization;
  summary.startup_seconds = clock.seconds_to_first_step();
  summary.startup_phases = clock.phases();
  if (!train::UsesLiveBackbones(job.method)) {
    summary.cache_path = job.cache_path.string();
    summary.cache_fingerprint = job.fingerprint;
  }
  summary.checkpoint = best_checkpoint.string();
  run->WriteSummary(summary.ToJson());
  return outcome;
}

}  // namespace iisan::launcher
