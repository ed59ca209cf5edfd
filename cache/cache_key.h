// The cache key: everything that determines the cached states (backbone weights and configs,
// tokenizer vocabulary and maximum length, image preprocessing and image bytes, the items'
// content and order, kept layers, dtype, and the backbones' init seed when their weights are
// random) as JSON, and its 64-bit digest. The same inputs give the same key; any change gives a
// new one.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "core/data/dataset.h"
#include "core/models/iisan.h"

namespace iisan::cache {

struct CacheBuildOptions {
  models::Modality modality = models::Modality::kTextImage;
  std::filesystem::path text_backbone;   // folder with config.json and vocab.txt
  std::filesystem::path image_backbone;  // folder with config.json and preprocessor_config.json
  std::vector<int> kept_layers;          // hidden-state indices; empty = DefaultKeptLayers
  int title_max_tokens = 30;
  int64_t batch_size = 512;
  int64_t chunk_items = 1024;  // items per resumable chunk (not part of the key)
  int threads = 0;             // host threads tokenising and decoding; 0 = one per core (not in the key)
  // Initialises a backbone whose folder has no checkpoint (text: this seed, image: + 1). Not the
  // training seed: a seed sweep must share one cache.
  uint64_t backbone_init_seed = 12345;
  // The backbones' compute dtype, and the dtype the file and the trainer keep the states in:
  // float32 or bfloat16 (ResolveDtype turns cache.dtype's "auto" into one of them).
  torch::ScalarType dtype = torch::kFloat32;
  torch::Device device = torch::kCPU;
  // Where CacheInputs remembers the digests of weight and image files between processes
  // (digest_memo.h; not part of the key); empty: they are read at every call.
  std::filesystem::path digest_memo_dir;
};

// "float32" / "bfloat16" and back; anything else is a CacheError naming `field`.
std::string DtypeName(torch::ScalarType dtype);
torch::ScalarType ParseDtype(const std::string& name, const std::string& field);

// cache.dtype's default: bfloat16 where the backbones run on CUDA, float32 on the CPU.
inline constexpr const char* kAutoDtype = "auto";
// ParseDtype, with kAutoDtype resolved for backbones running on `device`. The resolved dtype is
// the one the key records, so a float32 and a bfloat16 cache never share a key.
torch::ScalarType ResolveDtype(const std::string& name, const torch::Device& device, const std::string& field);

// The embedding output plus every second layer, ending at the last: {0, 2, 4, …, 12} for 12
// layers, as the reference's LayerDrop (IISAN.md §4).
std::vector<int> DefaultKeptLayers(int num_layers);

// The kept layers both backbones share (they must agree in count for the inter-modal tower).
std::vector<int> ResolveKeptLayers(const CacheBuildOptions& options);

// Everything that determines the cached states, as JSON, and its 64-bit digest in hex (the key).
nlohmann::json CacheInputs(const data::Dataset& dataset, const CacheBuildOptions& options);
std::string CacheFingerprint(const nlohmann::json& inputs);

}  // namespace iisan::cache
