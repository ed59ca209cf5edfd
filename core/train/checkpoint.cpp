// The checkpoint files and the trainer's state inside them (version 2: the step to continue
// from mid-epoch; version 1, written at epoch ends only, is still read).
#include "core/train/checkpoint.h"

#include <algorithm>
#include <csignal>
#include <cstdlib>

#include <glog/logging.h>
#include <torch/torch.h>

#include "core/data/atomic_file.h"
#include "core/data/json_input.h"
#include "core/data/text_file.h"
#include "core/models/param_count.h"

namespace iisan::train {
namespace {

constexpr int kCheckpointVersion = 2;

nlohmann::ordered_json MetricsState(const RankingMetrics& m) {
  return {{"ks", m.ks}, {"hit_sum", m.hit_sum}, {"ndcg_sum", m.ndcg_sum}, {"users", m.users}};
}

RankingMetrics MetricsFromState(const nlohmann::ordered_json& j) {
  RankingMetrics m(j.at("ks").get<std::vector<int>>());
  m.hit_sum = j.at("hit_sum").get<std::vector<double>>();
  m.ndcg_sum = j.at("ndcg_sum").get<std::vector<double>>();
  m.users = j.at("users").get<int64_t>();
  if (m.hit_sum.size() != m.ks.size() || m.ndcg_sum.size() != m.ks.size()) {
    throw std::runtime_error("metric sums do not match their K list");
  }
  return m;
}

}  // namespace

std::vector<std::pair<std::string, torch::Tensor>> Trainer::GeneratorStates() const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  out.emplace_back("rng.cpu", GeneratorState(torch::kCPU));
  if (options_.device.is_cuda()) out.emplace_back("rng.cuda", GeneratorState(options_.device));
  return out;
}

TrainCheckpoint Trainer::Checkpoint() const {
  const auto& p = progress_;
  TrainCheckpoint out;
  out.state = {{"version", kCheckpointVersion},
               {"epochs_done", p.result.epochs_run},
               {"epoch_in_flight", p.epoch_in_flight},
               {"next_step", p.next_step},
               {"partial_train_seconds", p.partial_train_seconds},
               {"best_hr", p.best_hr},
               {"bad_epochs", p.bad_epochs},
               {"best_epoch", p.result.best_epoch},
               {"best_valid", MetricsState(p.result.best_valid)},
               {"test", MetricsState(p.result.test)},
               {"full_epoch_steps", p.result.full_epoch_steps},
               {"steps_measured", p.result.steps_measured},
               {"train_total", p.train_total},
               {"later_train_total", p.later_train_total},
               {"eval_total", p.eval_total},
               {"valid_total", p.valid_total},
               {"steady_total", p.steady_total},
               {"utilization_total", p.utilization_total},
               {"utilization_epochs", p.utilization_epochs},
               {"truncated", p.truncated},
               {"seed", options_.seed},
               {"batch_size", options_.batch_size}};
  for (auto& [name, tensor] : optimizer_->State()) out.tensors.emplace_back(name, tensor.detach().to(torch::kCPU));
  // The generators dropout draws from; the epochs' user order is a function of seed and epoch.
  for (auto& item : GeneratorStates()) out.tensors.push_back(std::move(item));
  // Mid-epoch: the sum of the losses of the steps already run (exact, as the device holds it)
  // and the first of them whose loss was not finite.
  out.tensors.emplace_back("trainer.loss_sum", epoch_loss_.SumState());
  out.tensors.emplace_back("trainer.first_nonfinite_step", epoch_loss_.FirstNonFiniteState());
  return out;
}

void Trainer::Resume(const TrainCheckpoint& checkpoint) {
  const auto& j = checkpoint.state;
  const int version = j.value("version", 0);
  if (version < 1 || version > kCheckpointVersion) {
    throw std::runtime_error("checkpoint version " + j.value("version", nlohmann::ordered_json(0)).dump() +
                             " is not 1 to " + std::to_string(kCheckpointVersion) + "; it was written by another iisan");
  }
  if (j.at("seed").get<uint64_t>() != options_.seed || j.at("batch_size").get<int64_t>() != options_.batch_size) {
    throw std::runtime_error("the checkpoint was trained with seed " + j.at("seed").dump() + " and batch size " +
                             j.at("batch_size").dump() + ", this run has seed " + std::to_string(options_.seed) +
                             " and batch size " + std::to_string(options_.batch_size) +
                             ": an exact resume needs the same; drop the overrides that change them");
  }
  auto lookup = [&](const std::string& name) {
    for (const auto& [key, tensor] : checkpoint.tensors) {
      if (key == name) return tensor;
    }
    return torch::Tensor();
  };
  optimizer_->LoadState([&](const std::string& name) { return lookup(name); });
  auto& p = progress_;
  p.best_hr = j.at("best_hr").get<double>();
  p.bad_epochs = j.at("bad_epochs").get<int>();
  p.result.best_epoch = j.at("best_epoch").get<int>();
  p.result.best_valid = MetricsFromState(j.at("best_valid"));
  p.result.test = MetricsFromState(j.at("test"));
  p.result.epochs_run = j.at("epochs_done").get<int>();
  p.result.full_epoch_steps = j.at("full_epoch_steps").get<int64_t>();
  p.result.steps_measured = j.at("steps_measured").get<int64_t>();
  p.train_total = j.at("train_total").get<double>();
  p.later_train_total = j.at("later_train_total").get<double>();
  p.eval_total = j.at("eval_total").get<double>();
  p.valid_total = j.at("valid_total").get<double>();
  p.steady_total = j.at("steady_total").get<double>();
  p.utilization_total = j.at("utilization_total").get<double>();
  p.utilization_epochs = j.at("utilization_epochs").get<int>();
  p.truncated = j.at("truncated").get<bool>();
  p.epoch_in_flight = version >= 2 ? j.at("epoch_in_flight").get<int>() : 0;
  p.next_step = version >= 2 ? j.at("next_step").get<int64_t>() : 0;
  p.partial_train_seconds = version >= 2 ? j.at("partial_train_seconds").get<double>() : 0.0;
  // The step to continue from must lie inside the epoch this run would train.
  const int64_t users = dataset_.num_users();
  int64_t epoch_steps = (users + options_.batch_size - 1) / options_.batch_size;
  if (options_.max_steps_per_epoch > 0) epoch_steps = std::min(epoch_steps, options_.max_steps_per_epoch);
  if (p.result.epochs_run < 0 || p.epoch_in_flight < 0 || p.next_step < 0 ||
      p.next_step >= std::max<int64_t>(1, epoch_steps) || (p.epoch_in_flight == 0) != (p.next_step == 0) ||
      (p.epoch_in_flight != 0 && p.epoch_in_flight != p.result.epochs_run + 1)) {
    throw std::runtime_error("inconsistent progress: epoch in flight " + std::to_string(p.epoch_in_flight) +
                             ", next step " + std::to_string(p.next_step) + " of " + std::to_string(epoch_steps) +
                             ", epochs done " + std::to_string(p.result.epochs_run));
  }
  if (p.next_step > 0) {
    const auto sum = lookup("trainer.loss_sum");
    if (!sum.defined() || sum.numel() != 1) throw std::runtime_error("checkpoint has no 'trainer.loss_sum' (mid-epoch)");
    epoch_loss_.Restore(sum, lookup("trainer.first_nonfinite_step"));
  }
  const auto cpu = lookup("rng.cpu");
  if (!cpu.defined()) throw std::runtime_error("checkpoint has no 'rng.cpu' generator state");
  SetGeneratorState(torch::kCPU, cpu);
  if (options_.device.is_cuda()) {
    const auto cuda = lookup("rng.cuda");
    if (!cuda.defined()) throw std::runtime_error("checkpoint has no 'rng.cuda' generator state (saved on a CPU run?)");
    SetGeneratorState(options_.device, cuda);
  }
  if (p.next_step > 0) {
    LOG(INFO) << "resumed in epoch " << p.epoch_in_flight << " at step " << p.next_step << " (best epoch "
              << p.result.best_epoch << ", " << p.bad_epochs << " epochs without a new best)";
  } else {
    LOG(INFO) << "resumed after epoch " << p.result.epochs_run << " (best epoch " << p.result.best_epoch << ", "
              << p.bad_epochs << " epochs without a new best)";
  }
}

models::NamedTensors TrainableTensors(Recommender& model) {
  models::NamedTensors out;
  for (auto& [name, tensor] : models::NamedTrainableParameters(*model)) {
    out.emplace_back(name, tensor.detach().to(torch::kCPU));
  }
  return out;
}

void SaveTrainableWeights(const std::filesystem::path& path, Recommender& model) {
  models::WriteSafetensors(path, TrainableTensors(model));
}

void LoadTrainableWeights(Recommender& model, const std::filesystem::path& path) {
  const models::SafetensorsReader reader(path);
  torch::NoGradGuard no_grad;
  for (auto& [name, parameter] : models::NamedTrainableParameters(*model)) {
    if (!reader.contains(name)) {
      throw std::runtime_error(path.string() + ": no tensor '" + name + "'; was it saved by a run of another "
                               "method or model config?");
    }
    const auto value = reader.Tensor(name);
    if (value.sizes() != parameter.sizes()) {
      throw std::runtime_error(path.string() + ": '" + name + "' has shape " + c10::str(value.sizes()) +
                               ", the model needs " + c10::str(parameter.sizes()));
    }
    if (value.is_floating_point() && !torch::isfinite(value).all().item<bool>()) {
      throw std::runtime_error(path.string() + ": '" + name + "' holds non-finite values (NaN or infinity); the "
                               "run that saved it diverged, so its metrics would mean nothing");
    }
    parameter.copy_(value);
  }
}

namespace {

std::string RankFile(int rank) { return "rng-rank" + std::to_string(rank) + ".safetensors"; }

// kEnvCheckpointKillAtStep.
void StepDone(int step) {
  const char* kill_at = std::getenv(kEnvCheckpointKillAtStep);
  if (kill_at == nullptr || std::atoi(kill_at) != step) return;
  LOG(WARNING) << kEnvCheckpointKillAtStep << "=" << step << ": killing this process mid-checkpoint";
  google::FlushLogFiles(google::GLOG_INFO);
  std::raise(SIGKILL);
}

}  // namespace

void SaveResumable(const std::filesystem::path& checkpoints, Recommender& model, const Trainer& trainer,
                   DataParallel* parallel) {
  const auto last = checkpoints / "last", temp = checkpoints / "last.tmp", old = checkpoints / "last.old";
  const int rank = parallel ? parallel->rank() : 0;
  if (rank == 0) {
    data::RemoveTree(temp);
    std::filesystem::create_directories(temp);
    StepDone(1);
  }
  if (parallel) {
    // Rank 0 has made last.tmp; the others add their generator states; then rank 0 goes on.
    parallel->Sum(0.0);
    if (rank > 0) models::WriteSafetensors(temp / RankFile(rank), trainer.GeneratorStates());
    parallel->Sum(0.0);
    if (rank > 0) return;
  }
  models::WriteSafetensors(temp / "model.safetensors", TrainableTensors(model));
  StepDone(2);
  const auto state = trainer.Checkpoint();
  models::WriteSafetensors(temp / "trainer.safetensors", state.tensors);
  StepDone(3);
  data::WriteFileAtomically(temp / "trainer.json", state.state.dump(2) + "\n");
  data::SyncDirectory(temp);
  StepDone(4);
  // The swap. A kill between the two renames leaves last.old as the only checkpoint (which
  // FindResumable accepts), so last.old is removed only while a whole `last` exists beside it.
  if (std::filesystem::exists(last)) {
    data::RemoveTree(old);
    StepDone(5);
    std::filesystem::rename(last, old);
    StepDone(6);
  }
  std::filesystem::rename(temp, last);
  data::SyncDirectory(checkpoints);
  StepDone(7);
  data::RemoveTree(old);
}

bool HasResumable(const std::filesystem::path& checkpoints) {
  for (const char* name : {"last", "last.old"}) {
    if (std::filesystem::exists(checkpoints / name / "trainer.json")) return true;
  }
  return false;
}

std::filesystem::path FindResumable(const std::filesystem::path& checkpoints) {
  for (const char* name : {"last", "last.old"}) {
    const auto dir = checkpoints / name;
    if (std::filesystem::exists(dir / "trainer.json")) return dir;
  }
  throw std::runtime_error((checkpoints / "last").string() + ": missing; the run left no resumable checkpoint, so "
                           "there is nothing to resume (start it again without train.resume)");
}

void ResumeFrom(const std::filesystem::path& dir, Recommender& model, Trainer& trainer, int rank) {
  LoadTrainableWeights(model, dir / "model.safetensors");
  TrainCheckpoint state;
  state.state = data::ReadJsonFile<nlohmann::ordered_json>(dir / "trainer.json");
  if (!state.state.is_object()) throw std::runtime_error((dir / "trainer.json").string() + ": not a JSON object");
  const models::SafetensorsReader reader(dir / "trainer.safetensors");
  for (const auto& name : reader.names()) state.tensors.emplace_back(name, reader.Tensor(name).clone());
  if (rank > 0) {
    // This rank's own generator states replace rank 0's, where the checkpoint has them.
    const auto own = dir / RankFile(rank);
    if (std::filesystem::exists(own)) {
      const models::SafetensorsReader rank_reader(own);
      for (auto& [name, tensor] : state.tensors) {
        if (name.rfind("rng.", 0) == 0 && rank_reader.contains(name)) tensor = rank_reader.Tensor(name).clone();
      }
    } else {
      LOG(WARNING) << own.string() << " missing (a checkpoint of another world size?): rank " << rank
                   << " continues from rank 0's generator states";
    }
  }
  try {
    trainer.Resume(state);
  } catch (const std::exception& error) {
    throw std::runtime_error(dir.string() + ": " + error.what());
  }
}

}  // namespace iisan::train
