// BertConfig / ViTConfig files under fuzzing (tests/fuzz_mutator.h): a damaged config.json
// either gives a config whose sizes are usable (positive, bounded, so that the shapes computed
// from them cannot overflow) or raises an std::runtime_error that names the file; nothing else
// escapes, nothing crashes or hangs.
#include "core/models/backbone_config.h"

#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <limits>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/fuzz_mutator.h"

namespace iisan::models {
namespace {

namespace fs = std::filesystem;
using iisan::testing::FuzzMutator;
using iisan::testing::FuzzRequire;
using iisan::testing::RunFuzz;

constexpr int64_t kIterations = 1000;

fs::path FreshFile() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const auto dir = fs::path(::testing::TempDir()) / ("backbone_config_fuzz_" + std::string(info->name()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir / "config.json";
}

const std::vector<std::string> kDictionary = {
    "\"hidden_size\"", "\"num_attention_heads\"", "\"image_size\"", "\"patch_size\"", "\"vocab_size\"",
    "\"hidden_act\"", "\"gelu_new\"", "\"position_embedding_type\"", "\"relative_key\"", "null", "true", ",", ":",
    "{", "}", "[", "]", "\""};

// Products of the sizes, as the models compute them (an embedding table, a patch grid, the
// attention scores of a sequence): every usable config keeps them within int64.
bool ProductFits(std::initializer_list<int64_t> factors) {
  __int128 product = 1;
  for (const int64_t factor : factors) {
    product *= factor;
    if (product > std::numeric_limits<int64_t>::max()) return false;
  }
  return true;
}

std::string NamesFile(const std::runtime_error& error, const fs::path& path) {
  const std::string message = error.what();
  return message.rfind(path.string(), 0) == 0 ? "" : "the error does not begin with the file's path: " + message;
}

TEST(BackboneConfigFuzzTest, DamagedBertConfigsLoadUsableSizesOrNameTheFile) {
  const auto path = FreshFile();
  FuzzMutator mutator(301,
                      {R"({"vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12,
  "num_attention_heads": 12, "intermediate_size": 3072, "hidden_act": "gelu", "max_position_embeddings": 512,
  "type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_dropout_prob": 0.1, "pad_token_id": 0,
  "architectures": ["BertModel"], "model_type": "bert", "position_embedding_type": "absolute"})",
                       R"({"vocab_size": 78, "hidden_size": 16, "num_hidden_layers": 2,
  "num_attention_heads": 2, "intermediate_size": 32, "max_position_embeddings": 40})"},
                      kDictionary);
  const auto outcome = RunFuzz<std::runtime_error>(
      mutator, kIterations,
      [&](const std::string& text) {
        std::ofstream(path, std::ios::binary) << text;
        const auto config = BertConfig::FromJsonFile(path.string());
        FuzzRequire(ProductFits({config.vocab_size, config.hidden_size}), "vocab_size x hidden_size fits int64");
        FuzzRequire(ProductFits({config.max_position_embeddings, config.max_position_embeddings,
                                 config.num_attention_heads}),
                    "the attention scores of the longest sequence fit int64");
        FuzzRequire(ProductFits({config.num_hidden_layers, config.hidden_size, config.intermediate_size}),
                    "the feed-forward weights of every layer fit int64");
      },
      [&](const std::runtime_error& error) { return NamesFile(error, path); });
  EXPECT_GT(outcome.parsed, 0);
  EXPECT_GT(outcome.refused, 0);
}

TEST(BackboneConfigFuzzTest, DamagedViTConfigsLoadUsableSizesOrNameTheFile) {
  const auto path = FreshFile();
  FuzzMutator mutator(302,
                      {R"({"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
  "intermediate_size": 3072, "hidden_act": "gelu", "image_size": 224, "patch_size": 16, "num_channels": 3,
  "qkv_bias": true, "layer_norm_eps": 1e-12, "model_type": "vit"})",
                       R"({"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
  "intermediate_size": 32, "image_size": 16, "patch_size": 8})"},
                      kDictionary);
  const auto outcome = RunFuzz<std::runtime_error>(
      mutator, kIterations,
      [&](const std::string& text) {
        std::ofstream(path, std::ios::binary) << text;
        const auto config = ViTConfig::FromJsonFile(path.string());
        const int64_t side = config.image_size / config.patch_size;
        FuzzRequire(ProductFits({side, side}) && ProductFits({side * side + 1, side * side + 1,
                                                              config.num_attention_heads}),
                    "the patch grid and its attention scores fit int64");
        FuzzRequire(ProductFits({config.num_channels, config.patch_size, config.patch_size, config.hidden_size}),
                    "the patch embedding fits int64");
        FuzzRequire(config.num_patches() >= 1, "at least one patch");
      },
      [&](const std::runtime_error& error) { return NamesFile(error, path); });
  EXPECT_GT(outcome.parsed, 0);
  EXPECT_GT(outcome.refused, 0);
}

}  // namespace
}  // namespace iisan::models
