// Turns a resolved config into what a job needs: the preprocessed dataset, the cache options
// and path, the model configs and the training options. Everything is validated here, before
// any run directory or cache file is created.
#pragma once

#include <filesystem>

#include "cache/builder.h"
#include "core/data/dataset.h"
#include "core/models/iisan.h"
#include "core/models/sasrec.h"
#include "core/train/recommender.h"
#include "core/train/trainer.h"
#include "launcher/config.h"

namespace iisan::launcher {

struct Job {
  Json config;
  data::Dataset dataset;
  cache::CacheBuildOptions cache_options;
  std::filesystem::path cache_path;  // resolved: cache.path, or cache.dir/<fingerprint>.h5
  std::string fingerprint;
  models::IisanConfig item_config;
  models::UserEncoderConfig user_config;
  train::TrainOptions train_options;
};

Job PrepareJob(const Json& config);

// Loads the job's cache, building it first when it does not exist; checks that it belongs to
// this job (fingerprint and item list) and returns its states.
train::ItemStates EnsureCache(const Job& job);

torch::Device ParseDevice(const std::string& name);

}  // namespace iisan::launcher
