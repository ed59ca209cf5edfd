// Config -> job for the keys a hyperparameter sweep varies: the training seed leaves the cache key
// alone (model.backbone_init_seed seeds random backbones).
#include "launcher/job.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cache/cache_key.h"
#include "tests/cache/cache_test_data.h"

namespace iisan::launcher {
namespace {

namespace fs = std::filesystem;
using cache::testing::FreshDir;
using cache::testing::WriteText;

// A config over cache::testing::WriteTinyProblem's data and backbones, caching under root/cache.
Config TinyConfig(const fs::path& root, std::vector<std::string> overrides = {}) {
  std::vector<std::string> all = {"data.dir=" + (root / "data").string(),
                                  "model.text_backbone=" + (root / "text").string(),
                                  "model.image_backbone=" + (root / "image").string(),
                                  "cache.dir=" + (root / "cache").string(), "cache.batch_size=16"};
  all.insert(all.end(), overrides.begin(), overrides.end());
  return LoadConfig({}, all);
}

TEST(JobTest, TheSeedLeavesTheCacheKeyAloneButTheBackboneInitSeedDoesNot) {
  const auto root = FreshDir("job");
  cache::testing::WriteTinyProblem(root);
  // The backbone folders hold no weights: the cached states come from seeded random weights.
  const auto base = PrepareJob(TinyConfig(root));
  const auto reseeded = PrepareJob(TinyConfig(root, {"seed=1"}));
  EXPECT_EQ(reseeded.fingerprint, base.fingerprint) << "a seed sweep must share one cache";
  EXPECT_EQ(PrepareJob(TinyConfig(root, {"seed=2"})).fingerprint, base.fingerprint);
  EXPECT_EQ(reseeded.train_options.seed, 1u);
  EXPECT_EQ(reseeded.cache_options.backbone_init_seed, 12345u);
  const auto other_backbones = PrepareJob(TinyConfig(root, {"model.backbone_init_seed=7"}));
  EXPECT_NE(other_backbones.fingerprint, base.fingerprint);
  EXPECT_EQ(other_backbones.train_options.seed, 12345u);
  EXPECT_EQ(other_backbones.cache_options.backbone_init_seed, 7u);
  // The default records what the default seed recorded before the key existed: the caches
  // made then keep their keys.
  EXPECT_EQ(cache::CacheInputs(base.dataset, base.cache_options)["backbone_weights"], "random-init seed 12345");

  // With weights in both folders the init seed plays no part.
  WriteText(root / "text/model.safetensors", "weights");
  WriteText(root / "image/model.safetensors", "weights");
  const auto weighted = PrepareJob(TinyConfig(root));
  EXPECT_NE(weighted.fingerprint, base.fingerprint);
  EXPECT_EQ(PrepareJob(TinyConfig(root, {"model.backbone_init_seed=7"})).fingerprint, weighted.fingerprint);
  EXPECT_FALSE(cache::CacheInputs(weighted.dataset, weighted.cache_options).contains("backbone_weights"));
}

}  // namespace
}  // namespace iisan::launcher
