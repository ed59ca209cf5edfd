// Subcommand implementations. The heavy lifting lives in core/ and cache/; this file wires a
// resolved config to them, owns the run directory and prints what the user asked for.
#include "launcher/commands.h"

#include <sys/resource.h>

#include <iomanip>

#include <glog/logging.h>
#include <torch/torch.h>

#include "cache/state_file.h"
#include "core/data/synthetic.h"
#include "core/models/backbone_config.h"
#include "core/models/bert.h"
#include "core/models/vit.h"
#include "launcher/job.h"
#include "launcher/run_dir.h"

namespace iisan::launcher {
namespace {

int64_t CountParameters(const torch::nn::Module& module, bool trainable) {
  int64_t total = 0;
  for (const auto& p : module.parameters()) {
    if (p.requires_grad() == trainable) total += p.numel();
  }
  return total;
}

double PeakRssGiB() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / (1024.0 * 1024.0);  // ru_maxrss is in KiB
}

void SaveCheckpoint(train::IisanRecommender& model, const std::filesystem::path& path) {
  auto temp = path;
  temp += ".tmp";
  torch::serialize::OutputArchive archive;
  model->save(archive);
  archive.save_to(temp.string());
  std::filesystem::rename(temp, path);
}

std::string Percent(double fraction) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(2) << 100.0 * fraction;
  return out.str();
}

}  // namespace

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

void CacheBuild(const Json& config, std::ostream& out) {
  const auto job = PrepareJob(config);
  if (std::filesystem::exists(job.cache_path)) {
    const auto file = cache::ReadStateFile(job.cache_path);
    if (file.fingerprint == job.fingerprint) {
      out << "cache up to date: " << job.cache_path.string() << " (fingerprint " << job.fingerprint << ")\n";
      return;
    }
    throw cache::CacheError(job.cache_path.string() + ": exists with fingerprint " + file.fingerprint +
                            " but this config needs " + job.fingerprint + "; delete it or choose another cache.path");
  }
  cache::BuildStateCache(job.dataset, job.cache_options, job.cache_path);
  out << "cache built: " << job.cache_path.string() << " (fingerprint " << job.fingerprint << ")\n";
}

Json Train(const Json& config_in, std::ostream& out) {
  Json config = config_in;
  auto job = PrepareJob(config);
  const auto states = EnsureCache(job);

  if (config["name"].get<std::string>().empty()) config["name"] = TimestampedName("train");
  auto run = RunDirectory::Create(At(config, "run_root").get<std::string>(), config["name"].get<std::string>(), config);
  google::SetLogDestination(google::GLOG_INFO, (run.log_dir() / "iisan.log.").string().c_str());
  LOG(INFO) << "run directory " << run.path() << ", " << job.dataset.num_users() << " users, "
            << job.dataset.num_items() << " items";

  torch::manual_seed(job.train_options.seed);
  train::IisanRecommender model(job.item_config, job.user_config);
  train::Trainer trainer(job.dataset, states, model, job.train_options);
  const auto checkpoint = run.checkpoint_dir() / "best.pt";
  const auto result = trainer.Fit([&](const train::EpochRecord& record) {
    run.AppendMetrics(record.ToJson());
    if (record.best) SaveCheckpoint(model, checkpoint);
  });
  const auto popularity = train::EvaluatePopularity(job.dataset, train::Split::kTest, job.train_options.ks);

  Json summary;
  summary["name"] = config["name"];
  summary["method"] = "iisan-cached";
  summary["modality"] = At(config, "model.modality");
  summary["best_epoch"] = result.best_epoch;
  summary["epochs_run"] = result.epochs_run;
  summary["valid"] = result.best_valid.ToJson();
  summary["test"] = result.test.ToJson();
  summary["popularity_test"] = popularity.ToJson();
  summary["trainable_parameters"] = trainer.trainable_parameters();
  summary["train_seconds_per_epoch"] = result.mean_train_seconds;
  summary["eval_seconds_per_epoch"] = result.mean_eval_seconds;
  summary["peak_memory_gib"] = PeakRssGiB();
  summary["peak_memory_kind"] = "host RSS";
  summary["cache"] = {{"path", job.cache_path.string()}, {"fingerprint", job.fingerprint}};
  summary["checkpoint"] = checkpoint.string();
  run.WriteSummary(summary);

  out << "run " << run.path().string() << ": best epoch " << result.best_epoch << " of " << result.epochs_run
      << ", test HR@10 " << Percent(result.test.hr(10)) << "%, NDCG@10 " << Percent(result.test.ndcg(10))
      << "% (popularity HR@10 " << Percent(popularity.hr(10)) << "%)\n";
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
  const auto states = EnsureCache(job);
  train::IisanRecommender model(job.item_config, job.user_config);
  torch::serialize::InputArchive archive;
  archive.load_from(checkpoint.string());
  model->load(archive);
  train::Trainer trainer(job.dataset, states, model, job.train_options);
  Json result;
  result["valid"] = trainer.Evaluate(train::Split::kValid).ToJson();
  result["test"] = trainer.Evaluate(train::Split::kTest).ToJson();
  result["popularity_test"] = train::EvaluatePopularity(job.dataset, train::Split::kTest, job.train_options.ks).ToJson();
  out << result.dump(2) << "\n";
  return result;
}

int64_t Describe(const DescribeOptions& options, std::ostream& out) {
  const auto modality = models::ParseModality(options.modality);
  struct Row { std::string module; int64_t trainable; int64_t frozen; };
  std::vector<Row> rows;
  int64_t hidden = 0;
  std::vector<int> kept;
  if (modality != models::Modality::kImage) {
    const auto config = models::BertConfig::FromJsonFile(options.text_backbone / "config.json");
    models::BertModel bert(config);
    for (auto& p : bert->parameters()) p.set_requires_grad(false);
    rows.push_back({"text backbone (BERT, frozen)", CountParameters(*bert, true), CountParameters(*bert, false)});
    hidden = config.hidden_size;
    kept = cache::DefaultKeptLayers(config.num_hidden_layers);
  }
  if (modality != models::Modality::kText) {
    const auto config = models::ViTConfig::FromJsonFile(options.image_backbone / "config.json");
    models::ViTModel vit(config);
    for (auto& p : vit->parameters()) p.set_requires_grad(false);
    rows.push_back({"image backbone (ViT, frozen)", CountParameters(*vit, true), CountParameters(*vit, false)});
    if (hidden && hidden != config.hidden_size) {
      throw std::runtime_error("the backbones' hidden sizes differ (" + std::to_string(hidden) + " vs " +
                               std::to_string(config.hidden_size) + "); IISAN needs equal widths");
    }
    hidden = config.hidden_size;
    kept = cache::DefaultKeptLayers(config.num_hidden_layers);
  }
  models::IisanConfig item_config;
  item_config.modality = modality;
  item_config.hidden_size = hidden;
  item_config.num_blocks = static_cast<int64_t>(kept.size());
  models::UserEncoderConfig user_config;
  user_config.max_len = options.max_seq_len;
  train::IisanRecommender model(item_config, user_config);

  int64_t iisan_total = 0;
  for (const auto& param : model->item_encoder->named_parameters(/*recurse=*/true)) {
    const std::string& name = param.key();
    const std::string module = "IISAN " + name.substr(0, name.find('.'));
    if (rows.empty() || rows.back().module != module) rows.push_back({module, 0, 0});
    rows.back().trainable += param.value().numel();
    iisan_total += param.value().numel();
  }
  const int64_t user = CountParameters(*model->user_encoder, true);
  rows.push_back({"user encoder (SASRec)", user, 0});
  iisan_total += user;

  int64_t trainable = 0, frozen = 0;
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
  out << "IISAN trainable parameters: " << WithThousands(iisan_total) << " (" << std::fixed << std::setprecision(2)
      << 100.0 * static_cast<double>(iisan_total) / static_cast<double>(trainable + frozen) << "% of all), "
      << kept.size() << " SAN blocks per tower, width " << hidden << "\n";
  return iisan_total;
}

}  // namespace iisan::launcher
