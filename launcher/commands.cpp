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
#include "core/train/checkpoint.h"
#include "core/train/evaluation.h"
#include "core/train/method.h"
#include "distributed/local_launch.h"
#include "distributed/rendezvous.h"
#include "launcher/job.h"
#include "launcher/preemption.h"
#include "launcher/run_dir.h"
#include "launcher/training_run.h"

namespace iisan::launcher {
namespace {

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

namespace {

void PrintOutcome(const TrainingOutcome& outcome, std::ostream& out) {
  const auto& summary = outcome.summary;
  out << "run " << outcome.run_dir.string() << " (" << summary.method_label << "): best epoch " << summary.best_epoch
      << " of " << summary.epochs_run << ", test HR@10 " << Percent(summary.test.hr(10)) << "%, NDCG@10 "
      << Percent(summary.test.ndcg(10)) << "% (popularity HR@10 " << Percent(summary.popularity_test.hr(10)) << "%); "
      << std::fixed << std::setprecision(2) << summary.train_seconds_per_epoch << " s/epoch training"
      << (summary.train_epoch_extrapolated ? " (extrapolated)" : "") << ", peak memory "
      << static_cast<double>(summary.peak_memory_bytes) / (1024.0 * 1024.0 * 1024.0) << " GiB ("
      << summary.peak_memory_kind << ")\n";
}

}  // namespace

train::RunSummary Train(const Config& config, std::ostream& out) {
  StartupClock startup;
  const auto outcome = RunTraining(PrepareJob(config, &startup), {}, &startup);
  if (outcome.lead && outcome.status != train::RunStatus::kCancelled) PrintOutcome(outcome, out);
  return outcome.summary;
}

int TrainCommand(const Config& config, std::ostream& out, StartupClock* startup) {
  CancelOnSignals signals;
  TrainingCallbacks callbacks;
  callbacks.cancel = signals.flag();
  StartupClock own_clock;
  StartupClock& clock = startup ? *startup : own_clock;
  const auto outcome = RunTraining(PrepareJob(config, &clock), callbacks, &clock);
  if (outcome.status != train::RunStatus::kCancelled) {
    if (outcome.lead) PrintOutcome(outcome, out);
    return 0;
  }
  const auto env = distributed::ProcessEnvironment();
  const auto why = DescribeStop(signals.signal(), SlurmTimeLeftSeconds(env));
  LOG(WARNING) << "stopped by " << why;
  if (outcome.lead) {
    out << "run " << outcome.run_dir.string() << " stopped by " << why << "; checkpoints/last continues it "
        << "(train.resume=auto or true)\n";
    const auto decision = DecideRequeue(env, config.train.max_requeues);
    LOG(INFO) << decision.reason;
    if (decision.requeue) RequeueJob(decision.job);
  }
  return kExitCancelled;
}

Json Evaluate(const std::filesystem::path& run_dir, const std::vector<std::string>& overrides, std::ostream& out) {
  const auto config_path = run_dir / "config.json";
  const auto checkpoint = run_dir / "checkpoints" / "best.safetensors";
  if (!std::filesystem::exists(config_path)) {
    throw std::runtime_error(config_path.string() + ": missing; is " + run_dir.string() + " a run directory?");
  }
  if (!std::filesystem::exists(checkpoint)) {
    throw std::runtime_error(checkpoint.string() + ": missing; the run saved no checkpoint (did it finish an epoch?)");
  }
  // The file's cache.token is a placeholder (kRedacted): the token comes from the overrides or the
  // environment, when the cache service is asked at all (CacheServiceToken).
  const auto config = LoadConfig(config_path, overrides);
  auto job = PrepareJob(config);
  auto model = BuildModel(job);
  train::LoadTrainableWeights(model, checkpoint);
  const auto& options = job.train_options.eval;
  Json result;
  result["valid"] = train::EvaluateModel(model, job.dataset, train::Split::kValid, options).ToJson();
  result["test"] = train::EvaluateModel(model, job.dataset, train::Split::kTest, options).ToJson();
  result["popularity_test"] = train::EvaluatePopularity(job.dataset, train::Split::kTest, options).ToJson();
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
