// What goes into the key, input by input. Backbone folders are recorded by content, not by
// location: moving a folder keeps the key, changing a byte of it does not.
#include "cache/cache_key.h"

#include "cache/digest.h"
#include "cache/digest_memo.h"
#include "cache/state_file.h"
#include "core/data/image.h"
#include "core/models/backbone_config.h"
#include "core/models/hf_checkpoint.h"
#include "core/models/modality.h"
#include "core/data/json_input.h"

namespace iisan::cache {
namespace {

using models::UsesImage;
using models::UsesText;

void RequireFile(const std::filesystem::path& path, const std::string& what) {
  if (!std::filesystem::is_regular_file(path)) {
    throw CacheError(path.string() + ": missing; the " + what + " folder must hold it");
  }
}

// Records the backbone's weight files and one digest of their bytes, so that new weights under
// the same names make a new key. False: there are none (the weights are the seeded init).
bool RecordWeights(nlohmann::json& modality_inputs, const std::filesystem::path& folder, const DigestMemo& memo) {
  if (!models::HasCheckpoint(folder)) return false;
  const auto paths = models::CheckpointFiles(folder);
  std::vector<std::string> files;
  for (const auto& file : paths) files.push_back(file.filename().string());
  const auto digest = memo.Digest("weights", paths, [&] {
    Digest64 weights;
    weights.Field("weights");
    for (const auto& file : paths) weights.Field(file.filename().string()).Field(Digest64().File(file).Hex());
    return weights.Hex();
  });
  modality_inputs["weights"] = {{"files", files}, {"digest", digest}};
  return true;
}

// The preprocessing as applied (defaults filled in), so that a key written out in full and one
// left to the defaults agree.
nlohmann::json ResolvedPreprocessing(const std::filesystem::path& file) {
  const auto config = data::ImagePreprocessConfig::FromJsonFile(file);
  config.RequireBatchable(file);
  return {{"height", config.height}, {"width", config.width}, {"mean", config.mean}, {"std", config.std},
          {"do_resize", config.do_resize}, {"do_rescale", config.do_rescale},
          {"do_normalize", config.do_normalize}, {"rescale_factor", config.rescale_factor},
          {"resample", "bilinear"}};
}

}  // namespace

std::string DtypeName(torch::ScalarType dtype) {
  if (dtype == torch::kFloat32) return "float32";
  if (dtype == torch::kBFloat16) return "bfloat16";
  throw CacheError(std::string("unsupported cache dtype ") + c10::toString(dtype));
}

torch::ScalarType ParseDtype(const std::string& name, const std::string& field) {
  if (name == "float32") return torch::kFloat32;
  if (name == "bfloat16") return torch::kBFloat16;
  throw CacheError(field + " must be float32 or bfloat16, got '" + name + "'");
}

torch::ScalarType ResolveDtype(const std::string& name, const torch::Device& device, const std::string& field) {
  if (name == kAutoDtype) return device.is_cuda() ? torch::kBFloat16 : torch::kFloat32;
  if (name == "float32" || name == "bfloat16") return ParseDtype(name, field);
  throw CacheError(field + " must be auto, float32 or bfloat16, got '" + name + "'");
}

std::vector<int> DefaultKeptLayers(int num_layers) {
  std::vector<int> kept = {0};
  const int first = num_layers % 2 == 0 ? 2 : 1;
  for (int layer = first; layer <= num_layers; layer += 2) kept.push_back(layer);
  return kept;
}

std::vector<int> ResolveKeptLayers(const CacheBuildOptions& options) {
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
  inputs["dtype"] = DtypeName(options.dtype);
  const DigestMemo memo(options.digest_memo_dir);
  // Backbones without a checkpoint are random, and then their init seed determines the states.
  bool random_weights = false;

  // Content and order: row r of the cache is the r-th item of items.tsv.
  Digest64 items_digest;
  items_digest.Field("items");
  for (int64_t item = 1; item <= dataset.num_items(); ++item) {
    items_digest.Field(dataset.item_ids[item]).Field(dataset.titles[item]);
  }
  inputs["items"] = {{"count", dataset.num_items()}, {"digest", items_digest.Hex()}};

  if (UsesText(options.modality)) {
    RequireFile(options.text_backbone / "config.json", "text backbone");
    RequireFile(options.text_backbone / "vocab.txt", "text backbone");
    inputs["text"] = {{"backbone", std::filesystem::absolute(options.text_backbone).string()},
                      {"config", data::ReadJsonFile<nlohmann::json>(options.text_backbone / "config.json", {size_t{1} << 20, 16})},
                      {"vocab_digest", Digest64().File(options.text_backbone / "vocab.txt").Hex()},
                      {"max_tokens", options.title_max_tokens}};
    random_weights |= !RecordWeights(inputs["text"], options.text_backbone, memo);
  }
  if (UsesImage(options.modality)) {
    RequireFile(options.image_backbone / "config.json", "image backbone");
    RequireFile(options.image_backbone / "preprocessor_config.json", "image backbone");
    const std::vector<std::filesystem::path> images(dataset.image_paths.begin() + 1, dataset.image_paths.end());
    const auto images_digest = memo.Digest("images", images, [&] {
      Digest64 digest;
      digest.Field("images");
      for (const auto& image : images) digest.File(image).Field("");
      return digest.Hex();
    });
    inputs["image"] = {{"backbone", std::filesystem::absolute(options.image_backbone).string()},
                       {"config", data::ReadJsonFile<nlohmann::json>(options.image_backbone / "config.json", {size_t{1} << 20, 16})},
                       {"preprocessing", ResolvedPreprocessing(options.image_backbone / "preprocessor_config.json")},
                       {"images_digest", images_digest}};
    random_weights |= !RecordWeights(inputs["image"], options.image_backbone, memo);
  }
  if (random_weights) inputs["backbone_weights"] = "random-init seed " + std::to_string(options.backbone_init_seed);
  return inputs;
}

std::string CacheFingerprint(const nlohmann::json& inputs) {
  nlohmann::json keyed = inputs;
  // Where a backbone folder lives does not change the states; its contents do.
  for (const char* modality : {"text", "image"}) {
    if (keyed.contains(modality)) keyed[modality].erase("backbone");
  }
  return Digest64().Update(keyed.dump()).Hex();
}

}  // namespace iisan::cache
