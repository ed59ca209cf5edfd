// Config → job objects, and the cache check-or-build step shared by `cache build` and `train`.
#include "launcher/job.h"

#include <glog/logging.h>
#include <torch/torch.h>

#include "cache/state_file.h"

namespace iisan::launcher {
namespace {

std::filesystem::path RequiredPath(const Json& config, const std::string& key, const std::string& what) {
  const auto value = At(config, key).get<std::string>();
  if (value.empty()) {
    throw ConfigError("config key '" + key + "' is empty; set it to the " + what + " (e.g. --set " + key + "=...)");
  }
  return value;
}

}  // namespace

torch::Device ParseDevice(const std::string& name) {
  if (name == "cpu") return torch::kCPU;
  if (name.rfind("cuda", 0) == 0) {
    if (!torch::cuda::is_available()) {
      throw ConfigError("train.device is '" + name + "' but this LibTorch build or machine has no CUDA device; use cpu");
    }
    return torch::Device(name);
  }
  throw ConfigError("train.device must be cpu, cuda or cuda:N, got '" + name + "'");
}

Job PrepareJob(const Json& config) {
  Job job;
  job.config = config;
  const auto modality = models::ParseModality(At(config, "model.modality").get<std::string>());

  auto& cache = job.cache_options;
  cache.modality = modality;
  if (modality != models::Modality::kImage) {
    cache.text_backbone = RequiredPath(config, "model.text_backbone", "text backbone folder (config.json, vocab.txt)");
  }
  if (modality != models::Modality::kText) {
    cache.image_backbone = RequiredPath(config, "model.image_backbone", "image backbone folder (config.json, preprocessor_config.json)");
  }
  cache.kept_layers = At(config, "model.kept_layers").get<std::vector<int>>();
  cache.title_max_tokens = At(config, "model.title_max_tokens").get<int>();
  cache.batch_size = At(config, "cache.batch_size").get<int64_t>();
  cache.seed = At(config, "seed").get<uint64_t>();
  cache.device = ParseDevice(At(config, "train.device").get<std::string>());

  data::PreprocessOptions preprocess;
  preprocess.min_seq_len = At(config, "data.min_seq_len").get<int>();
  preprocess.max_seq_len = At(config, "data.max_seq_len").get<int>();
  preprocess.require_images = modality != models::Modality::kText;
  job.dataset = data::LoadDataset(RequiredPath(config, "data.dir", "dataset folder (users.tsv, items.tsv, images/)"), preprocess);

  const auto inputs = cache::CacheInputs(job.dataset, cache);
  job.fingerprint = cache::CacheFingerprint(inputs);
  const auto explicit_path = At(config, "cache.path").get<std::string>();
  job.cache_path = explicit_path.empty()
      ? std::filesystem::path(At(config, "cache.dir").get<std::string>()) / (job.fingerprint + ".h5")
      : std::filesystem::path(explicit_path);

  const auto kept = inputs["kept_layers"].get<std::vector<int>>();
  auto& item = job.item_config;
  item.modality = modality;
  item.num_blocks = static_cast<int64_t>(kept.size());
  item.bottleneck = At(config, "model.bottleneck").get<int64_t>();
  item.embedding_dim = At(config, "model.embedding_dim").get<int64_t>();
  item.gate_temperature = At(config, "model.gate_temperature").get<double>();
  const int64_t text_dim = inputs.contains("text") ? inputs["text"]["config"]["hidden_size"].get<int64_t>() : 0;
  const int64_t image_dim = inputs.contains("image") ? inputs["image"]["config"]["hidden_size"].get<int64_t>() : 0;
  if (text_dim && image_dim && text_dim != image_dim) {
    throw ConfigError("the text backbone's hidden_size (" + std::to_string(text_dim) + ") differs from the image "
                      "backbone's (" + std::to_string(image_dim) + "); IISAN's inter-modal tower needs equal widths");
  }
  item.hidden_size = text_dim ? text_dim : image_dim;

  auto& user = job.user_config;
  user.embedding_dim = item.embedding_dim;
  user.max_len = preprocess.max_seq_len;
  user.num_blocks = At(config, "model.user_blocks").get<int64_t>();
  user.num_heads = At(config, "model.user_heads").get<int64_t>();
  user.dropout = At(config, "model.dropout").get<double>();

  auto& train = job.train_options;
  train.batch_size = At(config, "train.batch_size").get<int64_t>();
  train.epochs = At(config, "train.epochs").get<int>();
  train.patience = At(config, "train.patience").get<int>();
  train.max_steps_per_epoch = At(config, "train.max_steps_per_epoch").get<int64_t>();
  train.eval_batch_size = At(config, "eval.batch_size").get<int64_t>();
  train.ks = At(config, "eval.ks").get<std::vector<int>>();
  if (std::find(train.ks.begin(), train.ks.end(), train.selection_k) == train.ks.end()) {
    throw ConfigError("eval.ks must contain " + std::to_string(train.selection_k) + " (model selection uses HR@" +
                      std::to_string(train.selection_k) + ")");
  }
  train.lr.recsys = At(config, "train.lr.recsys").get<double>();
  train.lr.text = At(config, "train.lr.text").get<double>();
  train.lr.image = At(config, "train.lr.image").get<double>();
  train.lr.adapter_text = At(config, "train.lr.adapter_text").get<double>();
  train.lr.adapter_image = At(config, "train.lr.adapter_image").get<double>();
  train.seed = cache.seed;
  train.device = cache.device;
  if (train.batch_size < 2) throw ConfigError("train.batch_size must be at least 2 (in-batch negatives)");
  if (train.epochs < 1) throw ConfigError("train.epochs must be at least 1");
  return job;
}

train::ItemStates EnsureCache(const Job& job) {
  if (!std::filesystem::exists(job.cache_path)) {
    LOG(INFO) << "no cache at " << job.cache_path << "; building it";
    cache::BuildStateCache(job.dataset, job.cache_options, job.cache_path);
  }
  auto file = cache::ReadStateFile(job.cache_path);
  if (file.fingerprint != job.fingerprint) {
    throw cache::CacheError(job.cache_path.string() + ": built from other inputs (fingerprint " + file.fingerprint +
                            ", this job needs " + job.fingerprint + "); remove cache.path to use the default "
                            "location, or delete the file to rebuild it");
  }
  if (file.items != job.dataset.item_ids) {
    throw cache::CacheError(job.cache_path.string() + ": its item list differs from the dataset's; delete it and rebuild");
  }
  LOG(INFO) << "loaded cache " << job.cache_path << " (" << file.items.size() - 1 << " items)";
  return {file.text, file.image};
}

}  // namespace iisan::launcher
