// Frozen-backbone forward passes over all items, in batches, with image decoding spread over
// threads so that the backbones are not left waiting on the CPU.
#include "cache/builder.h"

#include <fstream>
#include <future>
#include <sstream>
#include <thread>

#include <glog/logging.h>
#include <torch/torch.h>

#include "cache/state_file.h"
#include "core/data/image.h"
#include "core/data/progress.h"
#include "core/data/tokenizer.h"
#include "core/models/backbone_config.h"
#include "core/models/bert.h"
#include "core/models/hf_checkpoint.h"
#include "core/models/safetensors.h"
#include "core/models/vit.h"

namespace iisan::cache {
namespace {

uint64_t Fnv1a(std::string_view bytes, uint64_t hash = 14695981039346656037ULL) {
  for (unsigned char c : bytes) {
    hash ^= c;
    hash *= 1099511628211ULL;
  }
  return hash;
}

std::string Hex(uint64_t value) {
  std::ostringstream out;
  out << std::hex;
  out.width(16);
  out.fill('0');
  out << value;
  return out.str();
}

std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw CacheError(path.string() + ": cannot read");
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::string FileDigest(const std::filesystem::path& path) { return Hex(Fnv1a(ReadFile(path))); }

bool UsesText(models::Modality m) { return m != models::Modality::kImage; }
bool UsesImage(models::Modality m) { return m != models::Modality::kText; }

void RequireFile(const std::filesystem::path& path, const std::string& what) {
  if (!std::filesystem::is_regular_file(path)) {
    throw CacheError(path.string() + ": missing; the " + what + " folder must hold it");
  }
}

// Whether `folder` holds weights to load (their files are logged); without them the backbone
// keeps its seeded random init, which is fine for smoke tests but meaningless for results.
bool AnnounceBackboneWeights(const std::string& what, const std::filesystem::path& folder, uint64_t seed) {
  if (!models::HasCheckpoint(folder)) {
    LOG(WARNING) << what << " backbone " << folder << " has no weights (model.safetensors): its weights are random "
                 << "(seed " << seed << "), so the cached states carry no pretrained knowledge";
    return false;
  }
  std::string files;
  for (const auto& file : models::CheckpointFiles(folder)) files += " " + file.filename().string();
  LOG(INFO) << what << " backbone weights from " << folder << ":" << files;
  return true;
}

// Records in a modality's inputs the backbone's weight files and one digest of their bytes,
// so that new weights under the same names make a new cache. False: there are none.
bool RecordWeights(nlohmann::json& modality_inputs, const std::filesystem::path& folder) {
  if (!models::HasCheckpoint(folder)) return false;
  std::vector<std::string> files;
  uint64_t digest = Fnv1a("weights");
  for (const auto& file : models::CheckpointFiles(folder)) {
    files.push_back(file.filename().string());
    digest = Fnv1a(files.back() + "\t" + models::SafetensorsDigest(file) + "\n", digest);
  }
  modality_inputs["weights"] = {{"files", files}, {"digest", Hex(digest)}};
  return true;
}

// [CLS] rows of the kept hidden states: [B, K, D].
torch::Tensor KeptClsStates(const std::vector<torch::Tensor>& hidden, const std::vector<int>& kept) {
  std::vector<torch::Tensor> rows;
  rows.reserve(kept.size());
  for (int index : kept) rows.push_back(hidden.at(index).select(1, 0));
  return torch::stack(rows, 1).to(torch::kCPU, torch::kFloat32);
}

void BuildText(const data::Dataset& dataset, const CacheBuildOptions& options, const std::vector<int>& kept,
               StateFileWriter& writer) {
  const auto config = models::BertConfig::FromJsonFile(options.text_backbone / "config.json");
  const auto tokenizer = data::WordPieceTokenizer::FromVocabFile(options.text_backbone / "vocab.txt");
  torch::manual_seed(options.seed);
  models::BertModel bert(config);
  if (AnnounceBackboneWeights("text", options.text_backbone, options.seed)) {
    models::LoadBertCheckpoint(bert, options.text_backbone);
  }
  bert->eval();
  bert->to(options.device);
  torch::NoGradGuard no_grad;

  const int64_t items = dataset.num_items();
  const int tokens = options.title_max_tokens;
  data::ProgressMeter progress("cache text", items, "items");
  for (int64_t begin = 1; begin <= items; begin += options.batch_size) {
    const int64_t end = std::min(items + 1, begin + options.batch_size);
    auto ids = torch::empty({end - begin, tokens}, torch::kInt64);
    auto mask = torch::empty({end - begin, tokens}, torch::kInt64);
    auto ids_a = ids.accessor<int64_t, 2>();
    auto mask_a = mask.accessor<int64_t, 2>();
    for (int64_t item = begin; item < end; ++item) {
      const auto encoded = tokenizer.Encode(dataset.titles[item], tokens);
      for (int t = 0; t < tokens; ++t) {
        ids_a[item - begin][t] = encoded.input_ids[t];
        mask_a[item - begin][t] = encoded.attention_mask[t];
      }
    }
    const auto hidden = bert->forward(ids.to(options.device), mask.to(options.device));
    writer.WriteRows("text", begin, KeptClsStates(hidden, kept));
    progress.Advance(end - begin);
  }
  progress.Finish();
}

void BuildImage(const data::Dataset& dataset, const CacheBuildOptions& options, const std::vector<int>& kept,
                StateFileWriter& writer) {
  const auto config = models::ViTConfig::FromJsonFile(options.image_backbone / "config.json");
  const auto preprocess = data::ImagePreprocessConfig::FromJsonFile(options.image_backbone / "preprocessor_config.json");
  torch::manual_seed(options.seed + 1);
  models::ViTModel vit(config);
  if (AnnounceBackboneWeights("image", options.image_backbone, options.seed + 1)) {
    models::LoadViTCheckpoint(vit, options.image_backbone);
  }
  vit->eval();
  vit->to(options.device);
  torch::NoGradGuard no_grad;

  const int64_t items = dataset.num_items();
  const int64_t pixels = 3LL * preprocess.height * preprocess.width;
  const unsigned workers = std::max(1u, std::min(8u, std::thread::hardware_concurrency()));
  data::ProgressMeter progress("cache image", items, "items");
  for (int64_t begin = 1; begin <= items; begin += options.batch_size) {
    const int64_t end = std::min(items + 1, begin + options.batch_size);
    auto batch = torch::empty({end - begin, 3, preprocess.height, preprocess.width}, torch::kFloat32);
    float* out = batch.data_ptr<float>();
    // Decode and resize in parallel: each worker takes every `workers`-th item of the batch.
    std::vector<std::future<void>> jobs;
    for (unsigned w = 0; w < workers; ++w) {
      jobs.push_back(std::async(std::launch::async, [&, w] {
        for (int64_t item = begin + w; item < end; item += workers) {
          const auto values = data::PreprocessImage(data::DecodeImage(dataset.image_paths[item]), preprocess);
          std::copy(values.begin(), values.end(), out + (item - begin) * pixels);
        }
      }));
    }
    for (auto& job : jobs) job.get();
    const auto hidden = vit->forward(batch.to(options.device));
    writer.WriteRows("image", begin, KeptClsStates(hidden, kept));
    progress.Advance(end - begin);
  }
  progress.Finish();
}

}  // namespace

std::vector<int> DefaultKeptLayers(int num_layers) {
  std::vector<int> kept = {0};
  const int first = num_layers % 2 == 0 ? 2 : 1;
  for (int layer = first; layer <= num_layers; layer += 2) kept.push_back(layer);
  return kept;
}

std::vector<int> ResolveKeptLayers(const CacheBuildOptions& options) {
  std::vector<int> text_layers, image_layers;
  int text_count = -1, image_count = -1;
  if (UsesText(options.modality)) {
    text_count = models::BertConfig::FromJsonFile(options.text_backbone / "config.json").num_hidden_layers;
  }
  if (UsesImage(options.modality)) {
    image_count = models::ViTConfig::FromJsonFile(options.image_backbone / "config.json").num_hidden_layers;
  }
  std::vector<int> kept = options.kept_layers;
  if (kept.empty()) {
    const auto text_default = text_count >= 0 ? DefaultKeptLayers(text_count) : std::vector<int>{};
    const auto image_default = image_count >= 0 ? DefaultKeptLayers(image_count) : std::vector<int>{};
    if (!text_default.empty() && !image_default.empty() && text_default != image_default) {
      throw CacheError("the text backbone has " + std::to_string(text_count) + " layers and the image backbone " +
                       std::to_string(image_count) + "; set model.kept_layers to one list valid for both");
    }
    kept = text_default.empty() ? image_default : text_default;
  }
  for (int layer : kept) {
    for (int count : {text_count, image_count}) {
      if (count >= 0 && (layer < 0 || layer > count)) {
        throw CacheError("model.kept_layers: hidden-state index " + std::to_string(layer) +
                         " is outside 0.." + std::to_string(count));
      }
    }
  }
  return kept;
}

nlohmann::json CacheInputs(const data::Dataset& dataset, const CacheBuildOptions& options) {
  nlohmann::json inputs;
  inputs["format_version"] = kStateFileFormatVersion;
  inputs["modality"] = models::ModalityName(options.modality);
  inputs["kept_layers"] = ResolveKeptLayers(options);
  inputs["dtype"] = "float32";
  // Backbones without a checkpoint are random, and then the seed determines the states.
  bool random_weights = false;

  uint64_t items_digest = Fnv1a("items");
  for (int64_t item = 1; item <= dataset.num_items(); ++item) {
    items_digest = Fnv1a(dataset.item_ids[item], items_digest);
    items_digest = Fnv1a("\t", items_digest);
    items_digest = Fnv1a(dataset.titles[item], items_digest);
    items_digest = Fnv1a("\n", items_digest);
  }
  inputs["items"] = {{"count", dataset.num_items()}, {"digest", Hex(items_digest)}};

  if (UsesText(options.modality)) {
    RequireFile(options.text_backbone / "config.json", "text backbone");
    RequireFile(options.text_backbone / "vocab.txt", "text backbone");
    inputs["text"] = {{"backbone", std::filesystem::absolute(options.text_backbone).string()},
                      {"config", nlohmann::json::parse(ReadFile(options.text_backbone / "config.json"))},
                      {"vocab_digest", FileDigest(options.text_backbone / "vocab.txt")},
                      {"max_tokens", options.title_max_tokens}};
    random_weights |= !RecordWeights(inputs["text"], options.text_backbone);
  }
  if (UsesImage(options.modality)) {
    RequireFile(options.image_backbone / "config.json", "image backbone");
    RequireFile(options.image_backbone / "preprocessor_config.json", "image backbone");
    uint64_t images_digest = Fnv1a("images");
    for (int64_t item = 1; item <= dataset.num_items(); ++item) {
      images_digest = Fnv1a(ReadFile(dataset.image_paths[item]), images_digest);
    }
    inputs["image"] = {{"backbone", std::filesystem::absolute(options.image_backbone).string()},
                       {"config", nlohmann::json::parse(ReadFile(options.image_backbone / "config.json"))},
                       {"preprocessor", nlohmann::json::parse(ReadFile(options.image_backbone / "preprocessor_config.json"))},
                       {"images_digest", Hex(images_digest)}};
    random_weights |= !RecordWeights(inputs["image"], options.image_backbone);
  }
  if (random_weights) inputs["backbone_weights"] = "random-init seed " + std::to_string(options.seed);
  return inputs;
}

std::string CacheFingerprint(const nlohmann::json& inputs) {
  nlohmann::json keyed = inputs;
  // Where a backbone folder lives does not change the states; its contents do.
  for (const char* modality : {"text", "image"}) {
    if (keyed.contains(modality)) keyed[modality].erase("backbone");
  }
  return Hex(Fnv1a(keyed.dump()));
}

std::string BuildStateCache(const data::Dataset& dataset, const CacheBuildOptions& options,
                            const std::filesystem::path& path) {
  const auto inputs = CacheInputs(dataset, options);
  const auto fingerprint = CacheFingerprint(inputs);
  const auto kept = inputs["kept_layers"].get<std::vector<int>>();
  const int64_t text_dim = UsesText(options.modality)
      ? models::BertConfig::FromJsonFile(options.text_backbone / "config.json").hidden_size : 0;
  const int64_t image_dim = UsesImage(options.modality)
      ? models::ViTConfig::FromJsonFile(options.image_backbone / "config.json").hidden_size : 0;
  LOG(INFO) << "building cache " << path << " (fingerprint " << fingerprint << "): " << dataset.num_items()
            << " items, " << kept.size() << " kept hidden states";

  StateFileWriter writer(path, dataset.item_ids, static_cast<int64_t>(kept.size()), text_dim, image_dim);
  if (text_dim > 0) BuildText(dataset, options, kept, writer);
  if (image_dim > 0) BuildImage(dataset, options, kept, writer);
  writer.Commit(fingerprint, inputs);
  LOG(INFO) << "cache written: " << path;
  return fingerprint;
}

}  // namespace iisan::cache
