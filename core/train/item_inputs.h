// The live backbones' inputs for every item, prepared once per job: titles tokenised to a
// [N+1, T] table, and images decoded and resized (PIL-exact) into one uint8 [N+1, 3, S, S]
// table in host memory, by parallel C++ threads. This is the equivalent of the reference's
// LMDB of decoded images; normalisation and the transfer to the device happen per batch.
#pragma once

#include <filesystem>

#include "core/data/dataset.h"
#include "core/train/recommender.h"

namespace iisan::train {

struct ItemInputOptions {
  std::filesystem::path vocab;         // vocab.txt; empty = no text
  std::filesystem::path preprocessor;  // preprocessor_config.json; empty = no images
  int max_tokens = 30;
  int threads = 0;  // 0 = hardware concurrency
};

// Throws data::InputError naming an unreadable image, std::runtime_error for a preprocessor
// config that does not resize (every image must come out at one size).
ItemInputs LoadItemInputs(const data::Dataset& dataset, const ItemInputOptions& options);

}  // namespace iisan::train
