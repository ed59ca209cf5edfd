// Config -> job for the keys a hyperparameter sweep varies: the training seed leaves the cache key
// alone (model.backbone_init_seed seeds random backbones), the IISAN ablations reach the side
// network without touching the cache, the inter tower alone needs both modalities, and the
// reference's LayerDrop variants (model.kept_layers) build their caches and train; cache.dtype's
// default resolves by device into the key and the config, and the trainer keeps a bf16 cache's
// table in bf16, with only the tables of the modalities the model reads.
#include "launcher/job.h"

#include <cmath>
#include <functional>
#include <numeric>
#include <set>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cache/cache_key.h"
#include "cache/store.h"
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

std::string ErrorOf(const std::function<void()>& action) {
  try {
    action();
  } catch (const std::exception& error) {
    return error.what();
  }
  return "";
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

TEST(JobTest, TheLearningRateScaleMultipliesEveryResolvedGroupAndNotTheConfig) {
  const auto root = FreshDir("job");
  cache::testing::WriteTinyProblem(root);
  for (const char* method : {"iisan", "fft", "adapter"}) {
    SCOPED_TRACE(method);
    const auto base = PrepareJob(TinyConfig(root, {std::string("model.method=") + method, "train.lr.text=3e-5"}));
    const auto scaled =
        PrepareJob(TinyConfig(root, {std::string("model.method=") + method, "train.lr.text=3e-5", "train.lr.scale=2.5"}));
    const auto& a = base.train_options.lr;
    const auto& b = scaled.train_options.lr;
    EXPECT_GT(a.recsys, 0.0);
    EXPECT_DOUBLE_EQ(a.text, 3e-5);
    EXPECT_DOUBLE_EQ(b.recsys, 2.5 * a.recsys);
    EXPECT_DOUBLE_EQ(b.text, 2.5 * a.text);
    EXPECT_DOUBLE_EQ(b.image, 2.5 * a.image);
    EXPECT_DOUBLE_EQ(b.adapter_text, 2.5 * a.adapter_text);
    EXPECT_DOUBLE_EQ(b.adapter_image, 2.5 * a.adapter_image);
    // The written config keeps the unscaled groups and the scale, so a resume scales once.
    EXPECT_DOUBLE_EQ(scaled.config.train.lr.recsys, a.recsys);
    EXPECT_DOUBLE_EQ(scaled.config.train.lr.scale, 2.5);
  }
  EXPECT_FALSE(ErrorOf([&] { TinyConfig(root, {"train.lr.scale=0"}); }).empty());
}

TEST(JobTest, AblationsReachTheSideNetworkAndShareTheCache) {
  const auto root = FreshDir("job");
  cache::testing::WriteTinyProblem(root);
  const auto base = PrepareJob(TinyConfig(root));
  EXPECT_EQ(base.model_config.side.towers, models::SanTowers::kIntraInter);
  EXPECT_EQ(base.model_config.side.fusion, models::SanFusion::kGated);
  EXPECT_FALSE(base.train_options.eval.count_repeated_targets);
  const auto ablated = PrepareJob(
      TinyConfig(root, {"model.iisan_towers=intra", "model.fusion=add", "eval.count_repeated_targets=true"}));
  EXPECT_EQ(ablated.model_config.side.towers, models::SanTowers::kIntra);
  EXPECT_EQ(ablated.model_config.side.fusion, models::SanFusion::kAdd);
  EXPECT_TRUE(ablated.train_options.eval.count_repeated_targets);
  EXPECT_EQ(ablated.fingerprint, base.fingerprint) << "the side network is not part of the cache";
  EXPECT_EQ(PrepareJob(TinyConfig(root, {"model.iisan_towers=inter"})).model_config.side.towers,
            models::SanTowers::kInter);
}

TEST(JobTest, TheInterTowerAloneNeedsBothModalities) {
  const auto root = FreshDir("job");
  cache::testing::WriteTinyProblem(root);
  for (const std::string modality : {"text", "image"}) {
    for (const std::string method : {"iisan", "iisan-uncached"}) {
      const auto error = ErrorOf([&] {
        PrepareJob(TinyConfig(root, {"model.iisan_towers=inter", "model.modality=" + modality, "model.method=" + method}));
      });
      EXPECT_NE(error.find("'model.iisan_towers' is 'inter'"), std::string::npos) << error;
      EXPECT_NE(error.find("'model.modality' is '" + modality + "'"), std::string::npos) << error;
    }
  }
  // Both intra variants are fine with one modality; the baselines have no towers to choose.
  EXPECT_EQ(ErrorOf([&] { PrepareJob(TinyConfig(root, {"model.iisan_towers=intra", "model.modality=text"})); }), "");
  EXPECT_EQ(ErrorOf([&] {
              PrepareJob(TinyConfig(root, {"model.iisan_towers=inter", "model.modality=text", "model.method=fft"}));
            }),
            "");
}

TEST(JobTest, TheReferenceLayerDropVariantsBuildTheirCachesAndTrain) {
  // The reference's side_adapter_*_list values (IISAN.md §7.2) over 12-layer backbones, as
  // hidden-state indices: the embedding output 0 plus each listed layer + 1.
  const auto root = FreshDir("job");
  cache::testing::WriteTinyProblem(root);
  WriteText(root / "text/config.json", R"({"vocab_size": 78, "hidden_size": 16, "num_hidden_layers": 12,
    "num_attention_heads": 2, "intermediate_size": 32, "max_position_embeddings": 40})");
  WriteText(root / "image/config.json", R"({"hidden_size": 16, "num_hidden_layers": 12,
    "num_attention_heads": 2, "intermediate_size": 32, "image_size": 16, "patch_size": 8})");
  std::vector<int> all_layers(13);
  std::iota(all_layers.begin(), all_layers.end(), 0);
  const std::vector<std::pair<std::string, std::vector<int>>> variants = {
      {"[0,2,4,6,8,10,12]", {0, 2, 4, 6, 8, 10, 12}},  // "1,3,5,7,9,11", the default
      {"[0,1,2,3,4,5,6,7,8,9,10,11,12]", all_layers},  // "0,1,...,11"
      {"[0,7,8,9,10,11,12]", {0, 7, 8, 9, 10, 11, 12}},  // "6,7,8,9,10,11"
  };
  const auto default_job = PrepareJob(TinyConfig(root));
  std::set<std::string> keys;
  for (const auto& [text, layers] : variants) {
    auto job = PrepareJob(TinyConfig(root, {"model.kept_layers=" + text, "train.epochs=1",
                                            "train.max_steps_per_epoch=2", "train.batch_size=8"}));
    EXPECT_EQ(job.model_config.kept_layers, layers) << text;
    EXPECT_EQ(job.model_config.side.num_blocks, static_cast<int64_t>(layers.size())) << text;
    keys.insert(job.fingerprint);
    // The cache holds the kept layers only, [N+1, K, H] per modality; a step trains on it.
    auto model = BuildModel(job);
    train::Trainer trainer(job.dataset, model, job.train_options);
    train::EpochRecord last;
    trainer.Fit([&](const train::EpochRecord& record) { last = record; });
    EXPECT_EQ(last.train_steps, 2) << text;
    EXPECT_TRUE(std::isfinite(last.train_loss)) << text;
  }
  // The cache stores only the kept layers, so each variant has its own cache (and key); the
  // default list written out is the default.
  EXPECT_EQ(keys.size(), variants.size());
  EXPECT_TRUE(keys.count(default_job.fingerprint));
}

// cache.dtype=auto (the default): float32 on the CPU (the key and config.json of a run say
// float32, as an explicit float32 does), bfloat16 where the backbones run on CUDA; bfloat16 is
// another key, so the two caches never mix.
TEST(JobTest, CacheDtypeAutoResolvesByDeviceIntoTheKeyAndTheConfig) {
  EXPECT_EQ(LoadConfig({}, {}).cache.dtype, "auto") << "the schema's default";
  EXPECT_EQ(cache::ResolveDtype("auto", torch::kCPU, "cache.dtype"), torch::kFloat32);
  EXPECT_EQ(cache::ResolveDtype("auto", torch::Device(torch::kCUDA, 1), "cache.dtype"), torch::kBFloat16);
  EXPECT_EQ(cache::ResolveDtype("float32", torch::Device(torch::kCUDA, 0), "cache.dtype"), torch::kFloat32);
  EXPECT_NE(ErrorOf([] { cache::ResolveDtype("half", torch::kCPU, "config key 'cache.dtype'"); })
                .find("config key 'cache.dtype' must be auto, float32 or bfloat16, got 'half'"),
            std::string::npos);

  const auto root = FreshDir("job");
  cache::testing::WriteTinyProblem(root);
  const auto automatic = PrepareJob(TinyConfig(root));
  EXPECT_EQ(automatic.cache_options.dtype, torch::kFloat32);
  EXPECT_EQ(automatic.config.cache.dtype, "float32") << "the run's config.json names the resolved dtype";
  EXPECT_EQ(ConfigToJson(automatic.config)["cache"]["dtype"], "float32");
  EXPECT_EQ(cache::CacheInputs(automatic.dataset, automatic.cache_options)["dtype"], "float32");
  const auto explicit_fp32 = PrepareJob(TinyConfig(root, {"cache.dtype=float32"}));
  EXPECT_EQ(explicit_fp32.fingerprint, automatic.fingerprint);
  const auto bf16 = PrepareJob(TinyConfig(root, {"cache.dtype=bfloat16"}));
  EXPECT_NE(bf16.fingerprint, automatic.fingerprint);
  EXPECT_EQ(bf16.config.cache.dtype, "bfloat16");
}

// train.matmul_precision=auto (the default) resolves to float32 on the CPU, which has no tf32,
// and is written back resolved; tf32 asked for reaches the trainer's options.
TEST(JobTest, MatmulPrecisionAutoResolvesByDeviceIntoTheConfig) {
  EXPECT_EQ(LoadConfig({}, {}).train.matmul_precision, "auto") << "the schema's default";
  const auto root = FreshDir("job-precision");
  cache::testing::WriteTinyProblem(root);
  const auto automatic = PrepareJob(TinyConfig(root));
  EXPECT_EQ(automatic.config.train.matmul_precision, "float32");
  EXPECT_EQ(ConfigToJson(automatic.config)["train"]["matmul_precision"], "float32");
  EXPECT_FALSE(automatic.train_options.tf32);
  const auto tf32 = PrepareJob(TinyConfig(root, {"train.matmul_precision=tf32"}));
  EXPECT_EQ(tf32.config.train.matmul_precision, "tf32");
  EXPECT_TRUE(tf32.train_options.tf32);
  EXPECT_NE(ErrorOf([] { LoadConfig({}, {"train.matmul_precision=half"}); }).find("train.matmul_precision"),
            std::string::npos);
}

// A bfloat16 cache becomes a bfloat16 table on the training device (here the CPU), with no
// float32 copy, and trains; loaded for a text model, the same text+image cache gives no image table.
TEST(JobTest, ABfloat16CacheStaysBfloat16AndOnlyTheModelsTablesAreLoaded) {
  const auto root = FreshDir("job");
  cache::testing::WriteTinyProblem(root);
  auto job = PrepareJob(TinyConfig(root, {"cache.dtype=bfloat16", "train.epochs=1", "train.max_steps_per_epoch=2",
                                          "train.batch_size=8"}));
  const int64_t rows = job.dataset.num_items() + 1, layers = job.model_config.side.num_blocks;
  auto model = BuildModel(job);
  const auto& states = model->item_states();
  ASSERT_TRUE(states.text.defined() && states.image.defined());
  for (const auto* table : {&states.text, &states.image}) {
    EXPECT_EQ(table->scalar_type(), torch::kBFloat16);
    EXPECT_EQ(table->numel(), rows * layers * 16);
    EXPECT_EQ(table->numel() * table->element_size(), rows * layers * 16 * 2) << "bytes held for the table";
  }
  train::Trainer trainer(job.dataset, model, job.train_options);
  train::EpochRecord last;
  trainer.Fit([&](const train::EpochRecord& record) { last = record; });
  EXPECT_TRUE(std::isfinite(last.train_loss));

  // The text+image cache, loaded for a text model: only its text table is read.
  cache::LoadOptions text_only;
  text_only.modality = models::Modality::kText;
  const auto tables = cache::LoadStateTables(job.cache_path, text_only, job.fingerprint, job.dataset.item_ids);
  EXPECT_EQ(tables.text.scalar_type(), torch::kBFloat16);
  EXPECT_FALSE(tables.image.defined());
}

}  // namespace
}  // namespace iisan::launcher
