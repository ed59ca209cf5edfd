// BertConfig / ViTConfig: reading the real Hugging Face configs, defaults, and error messages.
#include "core/models/backbone_config.h"

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/core/models/model_test_util.h"

namespace iisan::models {
namespace {

using testing::ExpectErrorContaining;
using testing::SharedDataDir;

nlohmann::json MinimalBertJson() {
  return {{"vocab_size", 100}, {"hidden_size", 32}, {"num_hidden_layers", 2},
          {"num_attention_heads", 4}, {"intermediate_size", 64}};
}

nlohmann::json MinimalViTJson() {
  return {{"hidden_size", 32}, {"num_hidden_layers", 2}, {"num_attention_heads", 4},
          {"intermediate_size", 64}, {"image_size", 32}, {"patch_size", 8}};
}

TEST(BertConfigTest, ReadsBertBaseUncased) {
  const auto path = SharedDataDir() / "bert-base-uncased" / "config.json";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "shared data not present: " << path;
  const auto config = BertConfig::FromJsonFile(path.string());
  EXPECT_EQ(config.vocab_size, 30522);
  EXPECT_EQ(config.hidden_size, 768);
  EXPECT_EQ(config.num_hidden_layers, 12);
  EXPECT_EQ(config.num_attention_heads, 12);
  EXPECT_EQ(config.intermediate_size, 3072);
  EXPECT_EQ(config.hidden_act, HiddenActivation::kGelu);
  EXPECT_DOUBLE_EQ(config.hidden_dropout_prob, 0.1);
  EXPECT_DOUBLE_EQ(config.attention_probs_dropout_prob, 0.1);
  EXPECT_EQ(config.max_position_embeddings, 512);
  EXPECT_EQ(config.type_vocab_size, 2);
  EXPECT_DOUBLE_EQ(config.layer_norm_eps, 1e-12);
  EXPECT_DOUBLE_EQ(config.initializer_range, 0.02);
  EXPECT_EQ(config.pad_token_id, 0);
  // The defaults are bert-base's, as Hugging Face's BertConfig defaults are.
  EXPECT_EQ(config, BertConfig{});
}

TEST(ViTConfigTest, ReadsVitBasePatch16) {
  const auto path = SharedDataDir() / "vit-base-patch16-224" / "config.json";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "shared data not present: " << path;
  const auto config = ViTConfig::FromJsonFile(path.string());
  EXPECT_EQ(config.hidden_size, 768);
  EXPECT_EQ(config.num_hidden_layers, 12);
  EXPECT_EQ(config.num_attention_heads, 12);
  EXPECT_EQ(config.intermediate_size, 3072);
  EXPECT_EQ(config.hidden_act, HiddenActivation::kGelu);
  EXPECT_DOUBLE_EQ(config.hidden_dropout_prob, 0.0);
  EXPECT_DOUBLE_EQ(config.attention_probs_dropout_prob, 0.0);
  EXPECT_DOUBLE_EQ(config.layer_norm_eps, 1e-12);
  EXPECT_EQ(config.image_size, 224);
  EXPECT_EQ(config.patch_size, 16);
  EXPECT_EQ(config.num_channels, 3);
  EXPECT_TRUE(config.qkv_bias);
  EXPECT_DOUBLE_EQ(config.initializer_range, 0.02);
  EXPECT_EQ(config.num_patches(), 196);
  EXPECT_EQ(config, ViTConfig{});
}

TEST(BertConfigTest, OptionalFieldsTakeHuggingFaceDefaultsAndUnknownFieldsAreIgnored) {
  auto json = MinimalBertJson();
  json["architectures"] = {"BertForMaskedLM"};
  json["some_future_field"] = {{"nested", true}};
  const auto config = BertConfig::FromJson(json, "cfg.json");
  EXPECT_EQ(config.hidden_size, 32);
  EXPECT_EQ(config.hidden_act, HiddenActivation::kGelu);
  EXPECT_DOUBLE_EQ(config.hidden_dropout_prob, 0.1);
  EXPECT_EQ(config.max_position_embeddings, 512);
  EXPECT_DOUBLE_EQ(config.layer_norm_eps, 1e-12);
  EXPECT_EQ(config.pad_token_id, 0);
}

TEST(BertConfigTest, MissingRequiredFieldNamesFileAndField) {
  auto json = MinimalBertJson();
  json.erase("hidden_size");
  ExpectErrorContaining([&] { BertConfig::FromJson(json, "models/bert/config.json"); },
                        {"models/bert/config.json", "'hidden_size'", "missing"});
}

TEST(BertConfigTest, WrongTypeNamesFieldAndType) {
  auto json = MinimalBertJson();
  json["hidden_size"] = "768";
  ExpectErrorContaining([&] { BertConfig::FromJson(json, "config.json"); },
                        {"config.json: field 'hidden_size' must be an integer, got string"});
  json = MinimalBertJson();
  json["num_hidden_layers"] = 12.5;
  ExpectErrorContaining([&] { BertConfig::FromJson(json, "config.json"); },
                        {"'num_hidden_layers' must be an integer, got number"});
  json = MinimalBertJson();
  json["layer_norm_eps"] = "1e-12";
  ExpectErrorContaining([&] { BertConfig::FromJson(json, "config.json"); },
                        {"'layer_norm_eps' must be a number, got string"});
}

TEST(BertConfigTest, RejectsInconsistentOrUnsupportedValues) {
  auto json = MinimalBertJson();
  json["num_attention_heads"] = 5;
  ExpectErrorContaining([&] { BertConfig::FromJson(json, "c.json"); },
                        {"c.json", "'hidden_size' (32) must be a multiple of 'num_attention_heads' (5)"});
  json = MinimalBertJson();
  json["hidden_act"] = "tanh";
  ExpectErrorContaining([&] { BertConfig::FromJson(json, "c.json"); }, {"c.json", "'hidden_act'", "gelu", "got \"tanh\""});
  json["hidden_act"] = std::string(1000, 'x');
  ExpectErrorContaining([&] { BertConfig::FromJson(json, "c.json"); }, {"'hidden_act'", "got a string of 1000 bytes"});
  json = MinimalBertJson();
  json["position_embedding_type"] = "relative_key";
  ExpectErrorContaining([&] { BertConfig::FromJson(json, "c.json"); }, {"'position_embedding_type'"});
  json = MinimalBertJson();
  json["hidden_dropout_prob"] = 1.5;
  ExpectErrorContaining([&] { BertConfig::FromJson(json, "c.json"); }, {"'hidden_dropout_prob' must be in [0, 1)"});
  json = MinimalBertJson();
  json["vocab_size"] = 0;
  ExpectErrorContaining([&] { BertConfig::FromJson(json, "c.json"); }, {"'vocab_size' must be positive, got 0"});
  ExpectErrorContaining([&] { BertConfig::FromJson(nlohmann::json::array(), "c.json"); },
                        {"c.json", "JSON object", "array"});
}

TEST(ViTConfigTest, DefaultsAndErrors) {
  const auto config = ViTConfig::FromJson(MinimalViTJson(), "vit.json");
  EXPECT_EQ(config.num_channels, 3);
  EXPECT_TRUE(config.qkv_bias);
  EXPECT_DOUBLE_EQ(config.hidden_dropout_prob, 0.0);
  EXPECT_EQ(config.num_patches(), 16);

  auto json = MinimalViTJson();
  json.erase("patch_size");
  ExpectErrorContaining([&] { ViTConfig::FromJson(json, "vit.json"); }, {"vit.json", "'patch_size'", "missing"});
  json = MinimalViTJson();
  json["image_size"] = 30;
  ExpectErrorContaining([&] { ViTConfig::FromJson(json, "vit.json"); },
                        {"'image_size' (30) must be a multiple of 'patch_size' (8)"});
  json = MinimalViTJson();
  json["qkv_bias"] = 1;
  ExpectErrorContaining([&] { ViTConfig::FromJson(json, "vit.json"); }, {"'qkv_bias' must be a boolean, got number"});
}

// Found by BackboneConfigFuzzTest: sizes of 2^40 were accepted, and the shapes computed from them
// (ViTConfig::num_patches, embedding tables) overflowed int64. Sizes now have upper bounds.
TEST(BackboneConfigTest, SizesPastAnyBackboneAreRefusedByName) {
  for (const auto& [field, value] : std::vector<std::pair<std::string, int64_t>>{
           {"vocab_size", int64_t{1} << 40}, {"hidden_size", 131072}, {"num_hidden_layers", 5000},
           {"intermediate_size", int64_t{1} << 21}, {"max_position_embeddings", int64_t{1} << 21}}) {
    auto json = MinimalBertJson();
    json[field] = value;
    if (field == "hidden_size") json["num_attention_heads"] = 1;
    ExpectErrorContaining([&] { BertConfig::FromJson(json, "c.json"); },
                          {"c.json", "'" + field + "' is " + std::to_string(value) + ", more than"});
  }
  auto json = MinimalViTJson();
  json["image_size"] = int64_t{1} << 40;  // a multiple of 8: only the bound refuses it
  ExpectErrorContaining([&] { ViTConfig::FromJson(json, "vit.json"); }, {"vit.json", "'image_size'", "more than"});
  json = MinimalViTJson();
  json["image_size"] = 65536;
  json["patch_size"] = 1;
  ExpectErrorContaining([&] { ViTConfig::FromJson(json, "vit.json"); }, {"vit.json", "4294967296 patches"});
  json = MinimalViTJson();
  json["image_size"] = 1024;
  json["patch_size"] = 1;
  EXPECT_EQ(ViTConfig::FromJson(json, "vit.json").num_patches(), 1 << 20);
}

TEST(BackboneConfigFileTest, UnreadableOrInvalidFilesNameThePath) {
  const auto dir = std::filesystem::path(::testing::TempDir()) / "iisan_backbone_config_test";
  std::filesystem::create_directories(dir);
  const auto missing = (dir / "absent.json").string();
  ExpectErrorContaining([&] { BertConfig::FromJsonFile(missing); }, {missing, "cannot open"});
  const auto broken = (dir / "broken.json").string();
  std::ofstream(broken) << "{\"hidden_size\": 768,";
  ExpectErrorContaining([&] { ViTConfig::FromJsonFile(broken); }, {broken, "not valid JSON"});
}

}  // namespace
}  // namespace iisan::models
