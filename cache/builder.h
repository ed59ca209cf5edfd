// Runs the frozen backbones once over every item and writes the kept layers' [CLS] states to
// an HDF5 state file (cache/state_file.h). The fingerprint covers everything that determines
// the states, so that a cache built from other inputs is never used by mistake.
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
  int64_t batch_size = 128;
  uint64_t seed = 12345;  // initialises the backbones while no checkpoint is loaded
  torch::Device device = torch::kCPU;
};

// The embedding output plus every second layer, ending at the last: {0, 2, 4, …, 12} for 12
// layers, as the reference's LayerDrop (IISAN.md §4).
std::vector<int> DefaultKeptLayers(int num_layers);

// The kept layers both backbones share (they must agree in count for the inter-modal tower).
std::vector<int> ResolveKeptLayers(const CacheBuildOptions& options);

// Everything that determines the cached states, as JSON, and its 64-bit digest in hex.
nlohmann::json CacheInputs(const data::Dataset& dataset, const CacheBuildOptions& options);
std::string CacheFingerprint(const nlohmann::json& inputs);

// Builds the cache into `path` (atomically). Returns the fingerprint.
std::string BuildStateCache(const data::Dataset& dataset, const CacheBuildOptions& options,
                            const std::filesystem::path& path);

}  // namespace iisan::cache
