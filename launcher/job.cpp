// Config → job objects, and the cache check-or-build step shared by `cache build` and `train`.
#include "launcher/job.h"

#include <algorithm>
#include <chrono>
#include <list>
#include <mutex>

#include <glog/logging.h>
#include <torch/torch.h>

#include "cache/digest_memo.h"
#include "cache/ensure.h"
#include "cache/service.h"
#include "cache/state_file.h"
#include "cache/store.h"
#include "core/models/hf_checkpoint.h"
#include "core/train/item_inputs.h"

namespace iisan::launcher {
namespace {

std::filesystem::path RequiredPath(const std::string& value, const std::string& key, const std::string& what) {
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

namespace {

// With KeepLoadedCaches(true), the last dataset read stays in memory for the next job that reads
// the same files (same sizes and modification times) with the same preprocessing.
struct KeptDataset {
  std::mutex mutex;
  bool keep = false;
  std::string key;
  data::Dataset dataset;
};

KeptDataset& Kept() {
  static KeptDataset kept;
  return kept;
}

data::Dataset LoadDatasetKept(const std::filesystem::path& dir, const data::PreprocessOptions& preprocess) {
  auto& kept = Kept();
  std::string key;
  {
    std::lock_guard<std::mutex> lock(kept.mutex);
    if (!kept.keep) return data::LoadDataset(dir, preprocess);
    std::error_code error;
    key = std::filesystem::weakly_canonical(dir, error).string() + "|" + std::to_string(preprocess.min_seq_len) + "|" +
          std::to_string(preprocess.max_seq_len) + "|" + std::to_string(preprocess.require_images);
    for (const char* file : {"users.tsv", "items.tsv"}) {
      const auto path = dir / file;
      const auto size = std::filesystem::file_size(path, error);
      const auto time = std::filesystem::last_write_time(path, error).time_since_epoch().count();
      key += "|" + std::to_string(error ? 0 : size) + "@" + std::to_string(error ? 0 : time);
    }
    if (kept.key == key) return kept.dataset;
  }
  auto dataset = data::LoadDataset(dir, preprocess);
  std::lock_guard<std::mutex> lock(kept.mutex);
  kept.key = key;
  kept.dataset = dataset;
  return dataset;
}

}  // namespace

Job PrepareJob(const Config& config_in, StartupClock* startup) {
  // Ranges and choices again: callers may have changed fields since the config was loaded.
  ValidateConfig(config_in);
  Job job;
  job.config = config_in;
  const Config& config = job.config;
  job.method = train::ParseMethod(config.model.method);
  const bool live = train::UsesLiveBackbones(job.method);
  const auto modality = models::ParseModality(config.model.modality);
  const auto towers = models::ParseSanTowers(config.model.iisan_towers);
  if (train::UsesSideNetwork(job.method) && towers == models::SanTowers::kInter &&
      modality != models::Modality::kTextImage) {
    throw ConfigError("config key 'model.iisan_towers' is 'inter' but 'model.modality' is '" + config.model.modality +
                      "': the inter-modal tower reads both modalities; set model.modality=text+image or "
                      "model.iisan_towers=intra");
  }

  auto& cache = job.cache_options;
  cache.modality = modality;
  if (modality != models::Modality::kImage) {
    cache.text_backbone = RequiredPath(config.model.text_backbone, "model.text_backbone",
                                       "text backbone folder (config.json, vocab.txt)");
  }
  if (modality != models::Modality::kText) {
    cache.image_backbone = RequiredPath(config.model.image_backbone, "model.image_backbone",
                                        "image backbone folder (config.json, preprocessor_config.json)");
  }
  cache.kept_layers = config.model.kept_layers;
  cache.title_max_tokens = config.model.title_max_tokens;
  cache.batch_size = config.cache.batch_size;
  cache.chunk_items = config.cache.chunk_items;
  cache.threads = config.cache.threads;
  cache.backbone_init_seed = config.model.backbone_init_seed;
  cache.device = ParseDevice(config.train.device);
  // "auto" resolved for the device the backbones run on, and written back: the run's config.json
  // and a cache service's request name the dtype the key holds.
  cache.dtype = cache::ResolveDtype(config.cache.dtype, cache.device, "config key 'cache.dtype'");
  job.config.cache.dtype = cache::DtypeName(cache.dtype);

  data::PreprocessOptions preprocess;
  preprocess.min_seq_len = config.data.min_seq_len;
  preprocess.max_seq_len = config.data.max_seq_len;
  preprocess.require_images = modality != models::Modality::kText;
  job.dataset = LoadDatasetKept(
      RequiredPath(config.data.dir, "data.dir", "dataset folder (users.tsv, items.tsv, images/)"), preprocess);
  if (startup) startup->Mark("dataset");

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
  side.bottleneck = config.model.bottleneck;
  side.embedding_dim = config.model.embedding_dim;
  side.towers = towers;
  side.fusion = models::ParseSanFusion(config.model.fusion);
  side.schedule = models::ParseTowerSchedule(config.model.iisan_schedule);
  side.gate_temperature = config.model.gate_temperature;
  model.adapter_bottleneck = config.model.adapter_bottleneck;
  model.lora_rank = config.model.lora_rank;
  model.lora_alpha = config.model.lora_alpha;

  auto& user = model.user;
  user.embedding_dim = side.embedding_dim;
  user.max_len = preprocess.max_seq_len;
  user.num_blocks = config.model.user_blocks;
  user.num_heads = config.model.user_heads;
  user.dropout = config.model.dropout;

  // 0 means "the reference's value for this method" (IISAN.md §6); the resolved value is
  // written back, so the run directory's config.json says what ran.
  const auto reference = train::ReferenceHyperparameters(job.method);
  auto& wanted = job.config.train;
  auto resolve = [](auto& slot, auto fallback) {
    if (slot == 0) slot = fallback;
    return slot;
  };
  auto& train = job.train_options;
  train.batch_size = resolve(wanted.batch_size, reference.batch_size);
  train.lr.recsys = resolve(wanted.lr.recsys, reference.lr.recsys);
  train.lr.text = resolve(wanted.lr.text, reference.lr.text);
  train.lr.image = resolve(wanted.lr.image, reference.lr.image);
  train.lr.adapter_text = resolve(wanted.lr.adapter_text, reference.lr.adapter_text);
  train.lr.adapter_image = resolve(wanted.lr.adapter_image, reference.lr.adapter_image);
  // The scale applies to what trains, not to the written config: config.json keeps the resolved
  // per-group values and the scale, so a resumed run scales them once again, as the first did.
  for (double* lr : {&train.lr.recsys, &train.lr.text, &train.lr.image, &train.lr.adapter_text,
                     &train.lr.adapter_image}) {
    *lr *= config.train.lr.scale;
  }
  train.epochs = config.train.epochs;
  train.patience = config.train.patience;
  train.max_steps_per_epoch = config.train.max_steps_per_epoch;
  train.cuda_graph = config.train.cuda_graph;
  // "auto" resolved for the training device and written back, so that config.json says what ran.
  if (job.config.train.matmul_precision == "auto") {
    job.config.train.matmul_precision = cache.device.is_cuda() ? "tf32" : "float32";
  }
  train.tf32 = job.config.train.matmul_precision == "tf32";
  train.profile_steps = config.train.profile_steps;
  train.check_sync_every = config.train.check_sync_every;
  train.eval.batch_size = config.eval.batch_size;
  train.eval.memory_mb = config.eval.memory_mb;
  train.eval.ks = config.eval.ks;
  train.eval.count_repeated_targets = config.eval.count_repeated_targets;
  if (std::find(train.eval.ks.begin(), train.eval.ks.end(), train.selection_k) == train.eval.ks.end()) {
    throw ConfigError("eval.ks must contain " + std::to_string(train.selection_k) + " (model selection uses HR@" +
                      std::to_string(train.selection_k) + ")");
  }
  train.seed = config.seed;
  train.device = cache.device;
  if (train.batch_size < 2) throw ConfigError("train.batch_size must be at least 2 (in-batch negatives)");
  try {
    train::CheckProfileSteps(train, job.dataset.num_users());
  } catch (const std::invalid_argument& error) {
    throw ConfigError(error.what());
  }

  if (!live) {
    // Reading every input to fingerprint them costs a pass over the weights and images; only the
    // cached method needs it, and a cache.dir of this process's own (content-addressed, no cache
    // service) remembers the digests of files that have not changed since (digest_memo.h).
    if (config.cache.path.empty() && config.cache.service.empty()) {
      cache.digest_memo_dir = std::filesystem::path(config.cache.dir) / cache::kDigestMemoFolder;
    }
    const auto inputs = cache::CacheInputs(job.dataset, cache);
    job.fingerprint = cache::CacheFingerprint(inputs);
    const auto& explicit_path = config.cache.path;
    job.cache_content_addressed = explicit_path.empty();
    job.cache_path = explicit_path.empty() ? std::filesystem::path(config.cache.dir) / (job.fingerprint + ".h5")
                                           : std::filesystem::path(explicit_path);
  }
  if (startup) startup->Mark(live ? "job" : "cache key");
  return job;
}

Json CacheServiceSpec(const Job& job) {
  Config spec = job.config;
  for (std::string* path : {&spec.data.dir, &spec.model.text_backbone, &spec.model.image_backbone}) {
    if (!path->empty()) *path = std::filesystem::absolute(*path).string();
  }
  Json json = ConfigToJson(spec);
  // The service decides where its caches live; the client's location, service and token stay here.
  for (const char* key : {"path", "dir", "service", "token", "service_timeout_s"}) json["cache"].erase(key);
  return json;
}

std::filesystem::path EnsureCacheFile(const Job& job, cache::BuildStats* stats) {
  const auto& service = job.config.cache.service;
  if (!service.empty()) {
    LOG(INFO) << "asking the cache service " << service << " for key " << job.fingerprint;
    cache::ServiceCallOptions call;
    call.connect_timeout = call.reply_timeout =
        std::chrono::milliseconds(static_cast<int64_t>(1000.0 * job.config.cache.service_timeout_s));
    const auto reply = cache::CallCacheService(
        service, {{"op", "ensure"}, {"config", CacheServiceSpec(job)}, {"token", CacheServiceToken(job.config)}},
        call);
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

namespace {

struct LoadedCaches {
  std::mutex mutex;
  bool keep = false;
  std::list<std::pair<std::string, train::ItemStates>> entries;  // most recent first
  CacheUse use;
};

LoadedCaches& Loaded() {
  static LoadedCaches loaded;
  return loaded;
}

}  // namespace

void KeepLoadedCaches(bool keep) {
  {
    auto& kept = Kept();
    std::lock_guard<std::mutex> lock(kept.mutex);
    kept.keep = keep;
    if (!keep) {
      kept.key.clear();
      kept.dataset = data::Dataset();
    }
  }
  auto& loaded = Loaded();
  std::lock_guard<std::mutex> lock(loaded.mutex);
  loaded.keep = keep;
  if (!keep) loaded.entries.clear();
}

CacheUse CacheUseCounters() {
  auto& loaded = Loaded();
  std::lock_guard<std::mutex> lock(loaded.mutex);
  return loaded.use;
}

train::ItemStates EnsureCache(const Job& job, StartupClock* startup) {
  // Straight onto the training device in the dtype the cache stores (cache.dtype: bf16 by default
  // on a GPU), only the tables of the modalities the model reads; the side network casts the
  // rows it gathers.
  cache::LoadOptions load;
  load.device = job.train_options.device;
  load.modality = job.model_config.modality;
  auto& loaded = Loaded();
  std::string key;
  {
    std::lock_guard<std::mutex> lock(loaded.mutex);
    if (loaded.keep) {
      key = job.cache_path.string() + "|" + job.fingerprint + "|" + load.device.str() + "|" +
            models::ModalityName(job.model_config.modality) + "|" + std::to_string(job.dataset.item_ids.size());
      for (auto it = loaded.entries.begin(); it != loaded.entries.end(); ++it) {
        if (it->first != key) continue;
        loaded.entries.splice(loaded.entries.begin(), loaded.entries, it);
        ++loaded.use.reused;
        LOG(INFO) << "cache " << job.fingerprint << ": reusing the states this process loaded";
        if (startup) startup->Mark("cache reused");
        return loaded.entries.front().second;
      }
    }
  }
  cache::BuildStats stats;
  const auto path = EnsureCacheFile(job, &stats);
  if (startup) startup->Mark(stats.items > 0 ? "cache build" : "cache check");
  const auto tables = cache::LoadStateTables(path, load, job.fingerprint, job.dataset.item_ids);
  if (startup) startup->Mark("cache load");
  train::ItemStates states{tables.text, tables.image};
  std::lock_guard<std::mutex> lock(loaded.mutex);
  if (stats.items > 0) ++loaded.use.built;
  else ++loaded.use.loaded;
  if (loaded.keep) {
    loaded.entries.emplace_front(key, states);
    constexpr size_t kKept = 4;
    while (loaded.entries.size() > kKept) loaded.entries.pop_back();
  }
  return states;
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

train::Recommender BuildModel(const Job& job, StartupClock* startup) {
  const auto& config = job.model_config;
  torch::manual_seed(job.train_options.seed);
  train::Recommender model(config);
  if (startup) startup->Mark("model");
  if (job.train_options.device.is_cuda()) {
    // The first allocation makes the CUDA context: timed on its own rather than in the cache load.
    torch::empty({1}, torch::TensorOptions().device(job.train_options.device));
    if (startup) startup->Mark("device init");
  }
  train::ItemStates states;
  train::ItemInputs inputs;
  if (!train::UsesLiveBackbones(job.method)) {
    states = EnsureCache(job, startup);
  } else {
    const auto& cache = job.cache_options;
    // Weights: the folder's checkpoint, else the cache builder's seeded random init.
    if (model->text_backbone) {
      if (models::HasCheckpoint(cache.text_backbone)) {
        models::LoadBertCheckpoint(model->text_backbone, cache.text_backbone);
      } else {
        LOG(WARNING) << "text backbone " << cache.text_backbone << " has no weights (model.safetensors): random "
                     << "weights (seed " << cache.backbone_init_seed << ")";
        torch::manual_seed(cache.backbone_init_seed);
        models::BertModel fresh(config.text);
        CopyParameters(*fresh, *model->text_backbone);
      }
    }
    if (model->image_backbone) {
      if (models::HasCheckpoint(cache.image_backbone)) {
        models::LoadViTCheckpoint(model->image_backbone, cache.image_backbone);
      } else {
        LOG(WARNING) << "image backbone " << cache.image_backbone << " has no weights (model.safetensors): random "
                     << "weights (seed " << cache.backbone_init_seed + 1 << ")";
        torch::manual_seed(cache.backbone_init_seed + 1);
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
    if (startup) startup->Mark("backbones and item inputs");
  }
  model->Prepare(states, inputs, job.train_options.device);
  if (startup) startup->Mark("device transfer");
  torch::manual_seed(job.train_options.seed);
  return model;
}

}  // namespace iisan::launcher
