// Subcommand implementations. The heavy lifting lives in core/ and cache/; this file wires a
// resolved config to them, owns the run directory and prints what the user asked for.
#include "launcher/commands.h"

#include <fstream>
#include <iomanip>

#include <glog/logging.h>
#include <torch/torch.h>

#include "cache/state_file.h"
#include "core/data/synthetic.h"
#include "core/data/text_file.h"
#include "core/models/backbone_config.h"
#include "core/models/bert.h"
#include "core/models/safetensors.h"
#include "core/models/vit.h"
#include "core/train/method.h"
#include "distributed/local_launch.h"
#include "distributed/process_group.h"
#include "distributed/rank_log.h"
#include "distributed/rendezvous.h"
#include "distributed/trainer_parallel.h"
#include "launcher/cache_ranks.h"
#include "launcher/job.h"
#include "launcher/run_dir.h"

namespace iisan::launcher {
namespace {

// Checkpoints hold what trains (DESIGN.md): frozen weights come back from the backbone
// folder or the seed. safetensors with the modules' PyTorch-style names, readable from Python:
//   checkpoints/best.safetensors   the trainable weights of the best epoch
//   checkpoints/last/              after every epoch: model.safetensors, trainer.safetensors
//                                  (optimizer moments and step, generator states) and
//                                  trainer.json (progress): what `train.resume` continues from
models::NamedTensors TrainableTensors(train::Recommender& model) {
  models::NamedTensors out;
  for (const auto& item : model->named_parameters()) {
    if (item.value().requires_grad()) out.emplace_back(item.key(), item.value().detach().to(torch::kCPU));
  }
  return out;
}

void LoadCheckpoint(train::Recommender& model, const std::filesystem::path& path) {
  const models::SafetensorsReader reader(path);
  torch::NoGradGuard no_grad;
  for (auto& item : model->named_parameters()) {
    if (!item.value().requires_grad()) continue;
    if (!reader.contains(item.key())) {
      throw std::runtime_error(path.string() + ": no tensor '" + item.key() + "'; was it saved by a run of another "
                               "method or model config?");
    }
    const auto value = reader.Tensor(item.key());
    if (value.sizes() != item.value().sizes()) {
      throw std::runtime_error(path.string() + ": '" + item.key() + "' has shape " + c10::str(value.sizes()) +
                               ", the model needs " + c10::str(item.value().sizes()));
    }
    item.value().copy_(value);
  }
}

// Writes checkpoints/last as a whole: into last.tmp, then swapped in by renames (a kill between
// the two renames leaves last.old, which Resume also accepts).
void SaveLast(const std::filesystem::path& checkpoints, train::Recommender& model, const train::Trainer& trainer) {
  const auto last = checkpoints / "last", temp = checkpoints / "last.tmp", old = checkpoints / "last.old";
  data::RemoveTree(temp);
  std::filesystem::create_directories(temp);
  models::WriteSafetensors(temp / "model.safetensors", TrainableTensors(model));
  const auto state = trainer.Checkpoint();
  models::WriteSafetensors(temp / "trainer.safetensors", state.tensors);
  WriteJsonAtomically(temp / "trainer.json", state.state);
  data::RemoveTree(old);
  if (std::filesystem::exists(last)) std::filesystem::rename(last, old);
  std::filesystem::rename(temp, last);
  data::RemoveTree(old);
}

// The checkpoint a resumed run continues from: last, or last.old when a kill came mid-swap.
std::filesystem::path LastCheckpoint(const std::filesystem::path& checkpoints) {
  for (const char* name : {"last", "last.old"}) {
    const auto dir = checkpoints / name;
    if (std::filesystem::exists(dir / "trainer.json")) return dir;
  }
  throw std::runtime_error((checkpoints / "last").string() + ": missing; the run finished no epoch, so there is "
                           "nothing to resume (start it again without train.resume)");
}

void ResumeFrom(const std::filesystem::path& dir, train::Recommender& model, train::Trainer& trainer) {
  LoadCheckpoint(model, dir / "model.safetensors");
  train::TrainCheckpoint state;
  std::ifstream in(dir / "trainer.json");
  state.state = nlohmann::ordered_json::parse(in, nullptr, false);
  if (state.state.is_discarded()) throw std::runtime_error((dir / "trainer.json").string() + ": not valid JSON");
  const models::SafetensorsReader reader(dir / "trainer.safetensors");
  for (const auto& name : reader.names()) state.tensors.emplace_back(name, reader.Tensor(name).clone());
  try {
    trainer.Resume(state);
  } catch (const std::exception& error) {
    throw std::runtime_error(dir.string() + ": " + error.what());
  }
}

// A resumed run must be the same run: its model, data and seed as stored.
void CheckSameRun(const std::filesystem::path& run_dir, const Json& stored_json, const Config& config) {
  const Config stored = ConfigFromJson(stored_json, (run_dir / "config.json").string());
  if (stored.model == config.model && stored.data == config.data && stored.seed == config.seed) return;
  // Name the first key that differs ("/model/embedding_dim" in the flattened documents).
  const auto a = ConfigToJson(stored).flatten(), b = ConfigToJson(config).flatten();
  for (const auto& [pointer, value] : b.items()) {
    if (pointer.rfind("/model/", 0) != 0 && pointer.rfind("/data/", 0) != 0 && pointer != "/seed") continue;
    if (a.contains(pointer) && a[pointer] == value) continue;
    throw ConfigError("train.resume: config key " + pointer.substr(1) + " is " + value.dump() + " but the run in " +
                      run_dir.string() + " used " + (a.contains(pointer) ? a[pointer].dump() : "nothing") +
                      "; a resumed run must keep its model, data and seed (change train.epochs or train.patience "
                      "only)");
  }
}

std::string Percent(double fraction) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(2) << 100.0 * fraction;
  return out.str();
}

}  // namespace

int Launch(int nproc, const std::vector<std::string>& args, std::ostream& err) {
  if (nproc < 1) throw std::runtime_error("--nproc must be at least 1, got " + std::to_string(nproc));
  if (args.empty()) throw std::runtime_error("launch needs the iisan command to run after --, e.g. -- train -c c.json");
  distributed::LocalLaunchOptions options;
  options.nproc = nproc;
  options.command.push_back(std::filesystem::read_symlink("/proc/self/exe").string());
  options.command.insert(options.command.end(), args.begin(), args.end());
  const auto result = distributed::LaunchLocal(options);
  if (result.exit_code != 0) err << "iisan launch: " << result.message << "\n";
  return result.exit_code;
}

std::string WithThousands(int64_t value) {
  std::string digits = std::to_string(value < 0 ? -value : value);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return value < 0 ? "-" + out : out;
}

void DataStats(const std::filesystem::path& dir, std::ostream& out) {
  const auto dataset = data::LoadDataset(dir, data::PreprocessOptions{});
  out << "dataset:      " << dir.string() << "\n"
      << "users:        " << WithThousands(dataset.num_users()) << "\n"
      << "items:        " << WithThousands(dataset.num_items()) << "\n"
      << "interactions: " << WithThousands(dataset.num_interactions()) << "\n"
      << "avg length:   " << std::fixed << std::setprecision(3)
      << static_cast<double>(dataset.num_interactions()) / std::max<int64_t>(1, dataset.num_users()) << "\n";
}

void DataSynth(const SynthCommandOptions& options, std::ostream& out) {
  data::SynthOptions synth;
  synth.num_users = options.users;
  synth.num_items = options.items;
  synth.num_categories = options.categories;
  synth.image_size = options.image_size;
  synth.seed = options.seed;
  synth.overwrite = options.overwrite;
  data::WriteSyntheticDataset(options.dir, synth);
  out << "wrote synthetic dataset to " << options.dir.string() << " (" << options.users << " users, "
      << options.items << " items, seed " << options.seed << ")\n";
}

void DataImages(const std::filesystem::path& dir, int size, uint64_t seed, int threads, std::ostream& out) {
  const int64_t written = data::WriteItemImages(dir, size, seed, threads);
  out << "wrote " << written << " images (" << size << "x" << size << " JPEG) to " << (dir / "images").string() << "\n";
}

Json Train(const Config& config_in, std::ostream& out) {
  // mpirun, srun or `iisan launch` make this process one rank of a data-parallel job; nothing
  // set is a world of one, anything partial is an error (never a silent world of one).
  const auto world = distributed::ResolveWorld({}, distributed::ProcessEnvironment());
  auto job = PrepareJob(config_in);
  Config config = job.config;
  std::optional<distributed::ProcessGroup> group;
  std::unique_ptr<distributed::RankLogPrefix> log_prefix;
  if (world.world_size > 1) {
    log_prefix = std::make_unique<distributed::RankLogPrefix>(world.rank, world.world_size);
    job.train_options.device = distributed::LocalDevice(world, job.train_options.device);
    job.cache_options.device = job.train_options.device;
    distributed::CollectiveOptions collective;
    collective.timeout = std::chrono::milliseconds(
        static_cast<int64_t>(1000.0 * config.train.collective_timeout_s));
    group = distributed::JoinProcessGroup(world, job.train_options.device, collective);
    LOG(INFO) << "data-parallel job: " << world.Describe();
    // The ranks build a missing cache together (each its share of the chunks).
    if (!train::UsesLiveBackbones(job.method)) EnsureCacheFileOnRanks(job, *group);
  }
  const bool lead = world.rank == 0;
  auto model = BuildModel(job);

  const bool resume = config.train.resume;
  // checkpoints/last holds 12 bytes per trainable parameter (weights and two Adam moments):
  // about 49 MB for IISAN, 2.3 GB for FFT at base size; 0 writes none (and nothing to resume).
  const int checkpoint_every = config.train.checkpoint_every;  // >= 0: the schema's range
  if (resume && config.name.empty()) {
    throw ConfigError("train.resume needs --set name=...: the name of the run to continue");
  }
  if (config.name.empty()) {
    if (world.world_size > 1) {
      throw ConfigError("a data-parallel run needs --set name=...: every rank must agree on the run directory");
    }
    config.name = TimestampedName("train");
  }
  const std::filesystem::path root = config.run_root;
  const auto name = config.name;
  const Json config_json = ConfigToJson(config);  // cache.token redacted
  const auto checkpoints = root / name / "checkpoints";
  std::filesystem::path resume_from;  // the checkpoint folder a resumed run continues from
  std::optional<RunDirectory> run;
  if (lead) {
    if (resume) {
      // Everything a resume needs is checked before the run directory is touched.
      run = RunDirectory::Reopen(root, name, config_json, [&](const Json& stored) {
        CheckSameRun(root / name, stored, config);
        resume_from = LastCheckpoint(checkpoints);
      });
    } else {
      run = RunDirectory::Create(root, name, config_json);
    }
    google::SetLogDestination(google::GLOG_INFO, (run->log_dir() / "iisan.log.").string().c_str());
    LOG(INFO) << "run directory " << run->path() << ": " << train::MethodLabel(job.method) << ", "
              << job.dataset.num_users() << " users, " << job.dataset.num_items() << " items, batch "
              << job.train_options.batch_size << ", device " << job.train_options.device << ", "
              << world.world_size << " rank(s)";
  }

  std::unique_ptr<distributed::ProcessGroupParallel> parallel;
  if (group) {
    std::vector<torch::Tensor> trainable;
    for (const auto& p : model->parameters()) {
      if (p.requires_grad()) trainable.push_back(p);
    }
    const auto bucket_bytes = static_cast<size_t>(config.train.bucket_mb * 1024.0 * 1024.0);
    parallel = std::make_unique<distributed::ProcessGroupParallel>(*group, job.train_options.device, trainable,
                                                                   std::max<size_t>(bucket_bytes, 1));
  }
  train::Trainer trainer(job.dataset, model, job.train_options, parallel.get());
  if (resume) {
    // Every rank reads the same files, so the ranks continue from one state.
    if (!lead) resume_from = LastCheckpoint(checkpoints);
    ResumeFrom(resume_from, model, trainer);
    if (lead) {
      run->TruncateMetrics(trainer.epochs_done());
      LOG(INFO) << "continuing " << run->path() << " from " << resume_from;
    }
  }
  const auto checkpoint = lead ? checkpoints / "best.safetensors" : std::filesystem::path();
  const auto result = trainer.Fit([&](const train::EpochRecord& record) {
    if (!lead) return;
    // The metrics line first: a kill before the checkpoint leaves a line that resuming drops.
    run->AppendMetrics(record.ToJson());
    if (record.best) models::WriteSafetensors(checkpoint, TrainableTensors(model));
    if (checkpoint_every > 0 && record.epoch % checkpoint_every == 0) SaveLast(checkpoints, model, trainer);
  });
  if (!lead) return Json();
  const auto popularity = train::EvaluatePopularity(job.dataset, train::Split::kTest, job.train_options.ks);

  Json summary;
  summary["name"] = config.name;
  summary["method"] = train::MethodName(job.method);
  summary["method_label"] = train::MethodLabel(job.method);
  summary["modality"] = config.model.modality;
  summary["device"] = job.train_options.device.str();
  summary["batch_size"] = job.train_options.batch_size;
  summary["best_epoch"] = result.best_epoch;
  summary["epochs_run"] = result.epochs_run;
  summary["valid"] = result.best_valid.ToJson();
  summary["test"] = result.test.ToJson();
  summary["popularity_test"] = popularity.ToJson();
  summary["trainable_parameters"] = trainer.trainable_parameters();
  summary["world_size"] = world.world_size;
  summary["measured_train_seconds_per_epoch"] = result.mean_train_seconds;
  summary["measured_eval_seconds_per_epoch"] = result.mean_eval_seconds;
  const auto efficiency = result.EfficiencyJson();  // items() must not outlive its object
  for (const auto& [key, value] : efficiency.items()) summary[key] = value;
  if (!train::UsesLiveBackbones(job.method)) {
    summary["cache"] = {{"path", job.cache_path.string()}, {"fingerprint", job.fingerprint}};
  }
  summary["checkpoint"] = checkpoint.string();
  run->WriteSummary(summary);

  out << "run " << run->path().string() << " (" << train::MethodLabel(job.method) << "): best epoch "
      << result.best_epoch << " of " << result.epochs_run << ", test HR@10 " << Percent(result.test.hr(10))
      << "%, NDCG@10 " << Percent(result.test.ndcg(10)) << "% (popularity HR@10 " << Percent(popularity.hr(10))
      << "%); " << std::fixed << std::setprecision(2) << result.train_seconds_per_epoch << " s/epoch training"
      << (result.train_epoch_extrapolated ? " (extrapolated)" : "") << ", peak memory "
      << static_cast<double>(result.peak_memory.bytes) / (1024.0 * 1024.0 * 1024.0) << " GiB ("
      << result.peak_memory.kind << ")\n";
  return summary;
}

Json Evaluate(const std::filesystem::path& run_dir, std::ostream& out) {
  const auto config_path = run_dir / "config.json";
  const auto checkpoint = run_dir / "checkpoints" / "best.safetensors";
  if (!std::filesystem::exists(config_path)) {
    throw std::runtime_error(config_path.string() + ": missing; is " + run_dir.string() + " a run directory?");
  }
  if (!std::filesystem::exists(checkpoint)) {
    throw std::runtime_error(checkpoint.string() + ": missing; the run saved no checkpoint (did it finish an epoch?)");
  }
  const auto config = LoadConfig(config_path, {});
  auto job = PrepareJob(config);
  auto model = BuildModel(job);
  LoadCheckpoint(model, checkpoint);
  train::Trainer trainer(job.dataset, model, job.train_options);
  Json result;
  result["valid"] = trainer.Evaluate(train::Split::kValid).ToJson();
  result["test"] = trainer.Evaluate(train::Split::kTest).ToJson();
  result["popularity_test"] = train::EvaluatePopularity(job.dataset, train::Split::kTest, job.train_options.ks).ToJson();
  out << result.dump(2) << "\n";
  return result;
}

int64_t Describe(const DescribeOptions& options, std::ostream& out) {
  const auto method = train::ParseMethod(options.method);
  train::RecommenderConfig config;
  // Cached IISAN trains what uncached IISAN trains; the backbones are shown for scale.
  config.method = method == train::Method::kIisan ? train::Method::kIisanUncached : method;
  config.modality = models::ParseModality(options.modality);
  config.user.max_len = options.max_seq_len;
  const bool text = config.modality != models::Modality::kImage, image = config.modality != models::Modality::kText;
  auto require = [](const std::filesystem::path& folder, const char* flag) {
    if (folder.empty()) throw std::runtime_error(std::string("describe needs ") + flag + " FOLDER (with config.json)");
  };
  int num_layers = 0;
  if (text) {
    require(options.text_backbone, "--text-backbone");
    config.text = models::BertConfig::FromJsonFile(options.text_backbone / "config.json");
    num_layers = static_cast<int>(config.text.num_hidden_layers);
  }
  if (image) {
    require(options.image_backbone, "--image-backbone");
    config.image = models::ViTConfig::FromJsonFile(options.image_backbone / "config.json");
    num_layers = static_cast<int>(config.image.num_hidden_layers);
  }
  config.kept_layers = cache::DefaultKeptLayers(num_layers);
  train::Recommender model(config);

  struct Row { std::string module; int64_t trainable = 0; int64_t frozen = 0; };
  std::vector<Row> rows;
  for (const auto& param : model->named_parameters()) {
    const std::string& name = param.key();
    const auto first = name.find('.');
    std::string module = name.substr(0, first);
    if (module == "item_encoder") module += "." + name.substr(first + 1, name.find('.', first + 1) - first - 1);
    if (rows.empty() || rows.back().module != module) rows.push_back({module});
    (param.value().requires_grad() ? rows.back().trainable : rows.back().frozen) += param.value().numel();
  }
  int64_t trainable = 0, frozen = 0;
  out << "method: " << train::MethodLabel(method) << " (" << train::MethodName(method) << "), modality "
      << options.modality << "\n";
  out << std::left << std::setw(34) << "module" << std::right << std::setw(16) << "trainable" << std::setw(16)
      << "frozen" << "\n";
  for (const auto& row : rows) {
    out << std::left << std::setw(34) << row.module << std::right << std::setw(16) << WithThousands(row.trainable)
        << std::setw(16) << WithThousands(row.frozen) << "\n";
    trainable += row.trainable;
    frozen += row.frozen;
  }
  out << std::left << std::setw(34) << "total" << std::right << std::setw(16) << WithThousands(trainable)
      << std::setw(16) << WithThousands(frozen) << "\n";
  out << train::MethodLabel(method) << " trainable parameters: " << WithThousands(trainable) << " (" << std::fixed
      << std::setprecision(2) << 100.0 * static_cast<double>(trainable) / static_cast<double>(trainable + frozen)
      << "% of all)";
  if (train::UsesSideNetwork(method)) {
    out << "; " << config.kept_layers.size() << " SAN blocks per tower";
    if (method == train::Method::kIisan) out << "; cached training holds no backbone";
  }
  out << "\n";
  return trainable;
}

}  // namespace iisan::launcher
