// Subcommand implementations. The heavy lifting lives in core/ and cache/; this file wires a
// resolved config to them, owns the run directory and prints what the user asked for.
#include "launcher/commands.h"

#include <iomanip>

#include <glog/logging.h>
#include <torch/torch.h>

#include "cache/state_file.h"
#include "core/data/synthetic.h"
#include "core/models/backbone_config.h"
#include "core/models/bert.h"
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
// folder or the seed. Written under a temporary name and renamed.
void SaveCheckpoint(train::Recommender& model, const std::filesystem::path& path) {
  auto temp = path;
  temp += ".tmp";
  torch::serialize::OutputArchive archive;
  for (const auto& item : model->named_parameters()) {
    if (item.value().requires_grad()) archive.write(item.key(), item.value().detach().to(torch::kCPU));
  }
  archive.save_to(temp.string());
  std::filesystem::rename(temp, path);
}

void LoadCheckpoint(train::Recommender& model, const std::filesystem::path& path) {
  torch::serialize::InputArchive archive;
  archive.load_from(path.string());
  torch::NoGradGuard no_grad;
  for (auto& item : model->named_parameters()) {
    if (!item.value().requires_grad()) continue;
    torch::Tensor value;
    if (!archive.try_read(item.key(), value)) {
      throw std::runtime_error(path.string() + ": no tensor '" + item.key() + "'; was it saved by a run of another "
                               "method or model config?");
    }
    if (value.sizes() != item.value().sizes()) {
      throw std::runtime_error(path.string() + ": '" + item.key() + "' has shape " + c10::str(value.sizes()) +
                               ", the model needs " + c10::str(item.value().sizes()));
    }
    item.value().copy_(value);
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

Json Train(const Json& config_in, std::ostream& out) {
  // mpirun, srun or `iisan launch` make this process one rank of a data-parallel job; nothing
  // set is a world of one, anything partial is an error (never a silent world of one).
  const auto world = distributed::ResolveWorld({}, distributed::ProcessEnvironment());
  auto job = PrepareJob(config_in);
  Json config = job.config;
  std::optional<distributed::ProcessGroup> group;
  std::unique_ptr<distributed::RankLogPrefix> log_prefix;
  if (world.world_size > 1) {
    log_prefix = std::make_unique<distributed::RankLogPrefix>(world.rank, world.world_size);
    job.train_options.device = distributed::LocalDevice(world, job.train_options.device);
    job.cache_options.device = job.train_options.device;
    distributed::CollectiveOptions collective;
    collective.timeout = std::chrono::milliseconds(
        static_cast<int64_t>(1000.0 * At(config, "train.collective_timeout_s").get<double>()));
    group = distributed::JoinProcessGroup(world, job.train_options.device, collective);
    LOG(INFO) << "data-parallel job: " << world.Describe();
    // The ranks build a missing cache together (each its share of the chunks).
    if (!train::UsesLiveBackbones(job.method)) EnsureCacheFileOnRanks(job, *group);
  }
  const bool lead = world.rank == 0;
  auto model = BuildModel(job);

  if (config["name"].get<std::string>().empty()) {
    if (world.world_size > 1) {
      throw ConfigError("a data-parallel run needs --set name=...: every rank must agree on the run directory");
    }
    config["name"] = TimestampedName("train");
  }
  std::optional<RunDirectory> run;
  if (lead) {
    run = RunDirectory::Create(At(config, "run_root").get<std::string>(), config["name"].get<std::string>(), config);
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
    const auto bucket_bytes = static_cast<size_t>(At(config, "train.bucket_mb").get<double>() * 1024.0 * 1024.0);
    parallel = std::make_unique<distributed::ProcessGroupParallel>(*group, job.train_options.device, trainable,
                                                                   std::max<size_t>(bucket_bytes, 1));
  }
  train::Trainer trainer(job.dataset, model, job.train_options, parallel.get());
  const auto checkpoint = lead ? run->checkpoint_dir() / "best.pt" : std::filesystem::path();
  const auto result = trainer.Fit([&](const train::EpochRecord& record) {
    if (!lead) return;
    run->AppendMetrics(record.ToJson());
    if (record.best) SaveCheckpoint(model, checkpoint);
  });
  if (!lead) return Json();
  const auto popularity = train::EvaluatePopularity(job.dataset, train::Split::kTest, job.train_options.ks);

  Json summary;
  summary["name"] = config["name"];
  summary["method"] = train::MethodName(job.method);
  summary["method_label"] = train::MethodLabel(job.method);
  summary["modality"] = At(config, "model.modality");
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
  const auto checkpoint = run_dir / "checkpoints" / "best.pt";
  if (!std::filesystem::exists(config_path)) {
    throw std::runtime_error(config_path.string() + ": missing; is " + run_dir.string() + " a run directory?");
  }
  if (!std::filesystem::exists(checkpoint)) {
    throw std::runtime_error(checkpoint.string() + ": missing; the run saved no checkpoint (did it finish an epoch?)");
  }
  auto config = ResolveConfig(config_path, {});
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
