// Turns a resolved config into what a job needs: the preprocessed dataset, the method, the
// model config, the cache options and path (cached IISAN) and the training options. Everything
// is validated here, before any run directory or cache file is created.
#pragma once

#include <filesystem>

#include "cache/builder.h"
#include "core/data/dataset.h"
#include "core/train/method.h"
#include "core/train/recommender.h"
#include "core/train/trainer.h"
#include "launcher/config.h"
#include "launcher/startup_clock.h"

namespace iisan::launcher {

struct Job {
  Config config;  // as given, with the method's reference values filled in where it said 0
  data::Dataset dataset;
  train::Method method = train::Method::kIisan;
  cache::CacheBuildOptions cache_options;
  std::filesystem::path cache_path;  // cached IISAN: cache.path, or cache.dir/<fingerprint>.h5
  bool cache_content_addressed = true;  // cache_path is cache.dir/<fingerprint>.h5
  std::string fingerprint;
  train::RecommenderConfig model_config;
  train::TrainOptions train_options;
};

// `startup` (when given: `iisan train`, a sweep trial) marks "dataset" and "cache key" (or "job").
Job PrepareJob(const Config& config, StartupClock* startup = nullptr);

// Makes sure the job's cache exists and returns its path: through the cache service when
// cache.service is set (the service builds it once, however many jobs ask), otherwise here,
// under the cache's file lock (concurrent processes build it once). `stats` receives the build's
// timing when this process built it.
std::filesystem::path EnsureCacheFile(const Job& job, cache::BuildStats* stats = nullptr);

// EnsureCacheFile, then loads the tables of the model's modalities onto the job's training device,
// in the cache's dtype (cache.dtype), after checking that it belongs to this job (fingerprint and
// item list).
// `startup` (when given) marks "cache check" and "cache load".
train::ItemStates EnsureCache(const Job& job, StartupClock* startup = nullptr);

// A sweep worker runs many trials in one process: with this on, EnsureCache keeps the last few
// loaded caches (by path, fingerprint, device and modality) and hands the same tensors, which no one
// writes, to later trials instead of reading the file again; PrepareJob keeps the last dataset
// read (same files, sizes and modification times, same preprocessing).
void KeepLoadedCaches(bool keep);
// What EnsureCache did since the process started: caches built here, loaded from a file, reused
// from memory.
struct CacheUse {
  int built = 0, loaded = 0, reused = 0;
};
CacheUse CacheUseCounters();

// The config an ensure request sends to the cache service: the job's config with absolute
// paths and without the client's cache location, service and token.
Json CacheServiceSpec(const Job& job);

// The job's model with its item data, ready on the training device: cached IISAN gets the
// cache (built if missing); live methods get tokenised titles, decoded images and backbone
// weights (the folder's checkpoint, or the cache builder's seeded random init without one, so
// that uncached IISAN sees the states cached IISAN would). `startup` (when given) marks "model",
// the cache's phases and "device transfer".
train::Recommender BuildModel(const Job& job, StartupClock* startup = nullptr);

torch::Device ParseDevice(const std::string& name);

}  // namespace iisan::launcher
