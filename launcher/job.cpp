// Config → job objects, and the cache check-or-build step shared by `cache build` and `train`.
#include "launcher/job.h"

#include <chrono>
#include <sstream>

#include <glog/logging.h>
#include <torch/torch.h>

#include "cache/ensure.h"
#include "cache/service.h"
#include "cache/state_file.h"
#include "cache/store.h"
#include "core/models/hf_checkpoint.h"
#include "core/train/item_inputs.h"

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
  job.method = train::ParseMethod(At(config, "model.method").get<std::string>());
  const bool live = train::UsesLiveBackbones(job.method);
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
  cache.chunk_items = At(config, "cache.chunk_items").get<int64_t>();
  if (cache.batch_size < 1) throw ConfigError("cache.batch_size must be at least 1");
  if (cache.chunk_items < 1) throw ConfigError("cache.chunk_items must be at least 1");
  cache.threads = At(config, "cache.threads").get<int>();
  if (cache.threads < 0) throw ConfigError("cache.threads must be 0 (one per core) or a positive thread count");
  cache.dtype = cache::ParseDtype(At(config, "cache.dtype").get<std::string>(), "config key 'cache.dtype'");
  cache.seed = At(config, "seed").get<uint64_t>();
  cache.device = ParseDevice(At(config, "train.device").get<std::string>());

  data::PreprocessOptions preprocess;
  preprocess.min_seq_len = At(config, "data.min_seq_len").get<int>();
  preprocess.max_seq_len = At(config, "data.max_seq_len").get<int>();
  preprocess.require_images = modality != models::Modality::kText;
  job.dataset = data::LoadDataset(RequiredPath(config, "data.dir", "dataset folder (users.tsv, items.tsv, images/)"), preprocess);

  const auto kept = cache::ResolveKeptLayers(cache);
  auto& model = job.model_config;
  model.method = job.method;
  model.modality = modality;
  if (modality != models::Modality::kImage) model.text = models::BertConfig::FromJsonFile(cache.text_backbone / "config.json");
  if (modality != models::Modality::kText) model.image = models::ViTConfig::FromJsonFile(cache.image_backbone / "config.json");
  const int64_t text_dim = modality != models::Modality::kImage ? model.text.hidden_size : 0;
  const int64_t image_dim = modality != models::Modality::kText ? model.image.hidden_size : 0;
  if (train::UsesSideNetwork(job.method) && text_dim && image_dim && text_dim != image_dim) {
    throw ConfigError("the text backbone's hidden_size (" + std::to_string(text_dim) + ") differs from the image "
                      "backbone's (" + std::to_string(image_dim) + "); IISAN's inter-modal tower needs equal widths");
  }
  model.kept_layers = kept;
  auto& side = model.side;
  side.modality = modality;
  side.num_blocks = static_cast<int64_t>(kept.size());
  side.hidden_size = text_dim ? text_dim : image_dim;
  side.bottleneck = At(config, "model.bottleneck").get<int64_t>();
  side.embedding_dim = At(config, "model.embedding_dim").get<int64_t>();
  side.gate_temperature = At(config, "model.gate_temperature").get<double>();
  model.adapter_bottleneck = At(config, "model.adapter_bottleneck").get<int64_t>();
  model.lora_rank = At(config, "model.lora_rank").get<int64_t>();
  model.lora_alpha = At(config, "model.lora_alpha").get<double>();
  if (model.adapter_bottleneck < 1) throw ConfigError("model.adapter_bottleneck must be at least 1");
  if (model.lora_rank < 1) throw ConfigError("model.lora_rank must be at least 1");

  auto& user = model.user;
  user.embedding_dim = side.embedding_dim;
  user.max_len = preprocess.max_seq_len;
  user.num_blocks = At(config, "model.user_blocks").get<int64_t>();
  user.num_heads = At(config, "model.user_heads").get<int64_t>();
  user.dropout = At(config, "model.dropout").get<double>();

  // 0 means "the reference's value for this method" (IISAN.md §6); the resolved value is
  // written back, so the run directory's config.json says what ran.
  const auto reference = train::ReferenceHyperparameters(job.method);
  auto resolve = [&](const std::string& key, auto fallback) {
    using T = decltype(fallback);
    auto& slot = job.config["train"];
    Json* node = &slot;
    std::stringstream stream(key.substr(6));
    for (std::string part; std::getline(stream, part, '.');) node = &(*node)[part];
    const T value = node->get<T>();
    if (value < 0) throw ConfigError("config key '" + key + "' must not be negative (0 = the method's reference value)");
    if (value == 0) *node = fallback;
    return node->get<T>();
  };
  auto& train = job.train_options;
  train.batch_size = resolve("train.batch_size", reference.batch_size);
  train.lr.recsys = resolve("train.lr.recsys", reference.lr.recsys);
  train.lr.text = resolve("train.lr.text", reference.lr.text);
  train.lr.image = resolve("train.lr.image", reference.lr.image);
  train.lr.adapter_text = resolve("train.lr.adapter_text", reference.lr.adapter_text);
  train.lr.adapter_image = resolve("train.lr.adapter_image", reference.lr.adapter_image);
  train.epochs = At(config, "train.epochs").get<int>();
  train.patience = At(config, "train.patience").get<int>();
  train.max_steps_per_epoch = At(config, "train.max_steps_per_epoch").get<int64_t>();
  train.cuda_graph = At(config, "train.cuda_graph").get<bool>();
  train.check_sync_every = At(config, "train.check_sync_every").get<int64_t>();
  if (train.check_sync_every < 0) throw ConfigError("train.check_sync_every must be >= 0 (0 = never)");
  if (At(config, "train.collective_timeout_s").get<double>() <= 0) {
    throw ConfigError("train.collective_timeout_s must be positive");
  }
  if (At(config, "train.bucket_mb").get<double>() <= 0) {
    throw ConfigError("train.bucket_mb (gradient all-reduce bucket size, MiB) must be positive");
  }
  train.eval_batch_size = At(config, "eval.batch_size").get<int64_t>();
  train.ks = At(config, "eval.ks").get<std::vector<int>>();
  if (std::find(train.ks.begin(), train.ks.end(), train.selection_k) == train.ks.end()) {
    throw ConfigError("eval.ks must contain " + std::to_string(train.selection_k) + " (model selection uses HR@" +
                      std::to_string(train.selection_k) + ")");
  }
  train.seed = cache.seed;
  train.device = cache.device;
  if (train.batch_size < 2) throw ConfigError("train.batch_size must be at least 2 (in-batch negatives)");
  if (train.epochs < 1) throw ConfigError("train.epochs must be at least 1");

  if (!live) {
    // Reading every input to fingerprint them costs a pass over the images; only the cached
    // method needs it.
    const auto inputs = cache::CacheInputs(job.dataset, cache);
    job.fingerprint = cache::CacheFingerprint(inputs);
    const auto explicit_path = At(config, "cache.path").get<std::string>();
    job.cache_content_addressed = explicit_path.empty();
    job.cache_path = explicit_path.empty()
        ? std::filesystem::path(At(config, "cache.dir").get<std::string>()) / (job.fingerprint + ".h5")
        : std::filesystem::path(explicit_path);
  }
  return job;
}

Json CacheServiceSpec(const Job& job) {
  Json spec = job.config;
  for (const char* key : {"data.dir", "model.text_backbone", "model.image_backbone"}) {
    const auto value = At(spec, key).get<std::string>();
    if (value.empty()) continue;
    const auto dot = std::string(key).find('.');
    spec[std::string(key).substr(0, dot)][std::string(key).substr(dot + 1)] = std::filesystem::absolute(value).string();
  }
  for (const char* key : {"path", "dir", "service", "token"}) spec["cache"].erase(key);
  return spec;
}

std::filesystem::path EnsureCacheFile(const Job& job, cache::BuildStats* stats) {
  const auto service = At(job.config, "cache.service").get<std::string>();
  if (!service.empty()) {
    LOG(INFO) << "asking the cache service " << service << " for key " << job.fingerprint;
    const auto reply = cache::CallCacheService(
        service, {{"op", "ensure"}, {"config", CacheServiceSpec(job)}, {"token", At(job.config, "cache.token")}});
    if (!reply.value("ok", false)) {
      throw cache::CacheError("cache service " + service + ": " + reply.value("error", std::string("no error message")));
    }
    if (reply.value("key", std::string()) != job.fingerprint) {
      throw cache::CacheError("cache service " + service + " answered key " + reply.value("key", std::string()) +
                              " for this job, which has key " + job.fingerprint + "; do the service and this job "
                              "read the same files?");
    }
    return reply.at("path").get<std::string>();
  }
  cache::EnsureRequest request;
  request.dataset = &job.dataset;
  request.options = job.cache_options;
  request.path = job.cache_path;
  request.fingerprint = job.fingerprint;
  request.content_addressed = job.cache_content_addressed;
  auto result = cache::EnsureStateCacheFile(request);
  if (result.built && stats) *stats = result.stats;
  return result.path;
}

train::ItemStates EnsureCache(const Job& job) {
  const auto path = EnsureCacheFile(job);
  // Straight onto the training device, slab by slab: on a GPU in bf16 (what the recommender keeps
  // there), so that neither a whole fp32 copy on the host nor one on the device is ever made.
  cache::LoadOptions load;
  load.device = job.train_options.device;
  load.dtype = load.device.is_cuda() ? torch::kBFloat16 : torch::kFloat32;
  const auto tables = cache::LoadStateTables(path, load, job.fingerprint, job.dataset.item_ids);
  return {tables.text, tables.image};
}

namespace {

// Copies every parameter of `from` into the parameter of the same name in `to` (which may
// have more: adapters, LoRA factors).
void CopyParameters(torch::nn::Module& from, torch::nn::Module& to) {
  torch::NoGradGuard no_grad;
  auto target = to.named_parameters();
  for (const auto& item : from.named_parameters()) target[item.key()].copy_(item.value());
}

}  // namespace

train::Recommender BuildModel(const Job& job) {
  const auto& config = job.model_config;
  torch::manual_seed(job.train_options.seed);
  train::Recommender model(config);
  train::ItemStates states;
  train::ItemInputs inputs;
  if (!train::UsesLiveBackbones(job.method)) {
    states = EnsureCache(job);
  } else {
    const auto& cache = job.cache_options;
    // Weights: the folder's checkpoint, else the cache builder's seeded random init.
    if (model->text_backbone) {
      if (models::HasCheckpoint(cache.text_backbone)) {
        models::LoadBertCheckpoint(model->text_backbone, cache.text_backbone);
      } else {
        LOG(WARNING) << "text backbone " << cache.text_backbone << " has no weights (model.safetensors): random "
                     << "weights (seed " << cache.seed << ")";
        torch::manual_seed(cache.seed);
        models::BertModel fresh(config.text);
        CopyParameters(*fresh, *model->text_backbone);
      }
    }
    if (model->image_backbone) {
      if (models::HasCheckpoint(cache.image_backbone)) {
        models::LoadViTCheckpoint(model->image_backbone, cache.image_backbone);
      } else {
        LOG(WARNING) << "image backbone " << cache.image_backbone << " has no weights (model.safetensors): random "
                     << "weights (seed " << cache.seed + 1 << ")";
        torch::manual_seed(cache.seed + 1);
        models::ViTModel fresh(config.image);
        CopyParameters(*fresh, *model->image_backbone);
      }
    }
    train::ItemInputOptions options;
    if (model->text_backbone) options.vocab = cache.text_backbone / "vocab.txt";
    if (model->image_backbone) options.preprocessor = cache.image_backbone / "preprocessor_config.json";
    options.max_tokens = cache.title_max_tokens;
    const auto start = std::chrono::steady_clock::now();
    inputs = train::LoadItemInputs(job.dataset, options);
    LOG(INFO) << "item inputs ready in "
              << std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() << " s";
  }
  model->Prepare(states, inputs, job.train_options.device);
  torch::manual_seed(job.train_options.seed);
  return model;
}

}  // namespace iisan::launcher
