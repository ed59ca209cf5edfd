// Hugging Face checkpoint loading: the naming of task models (prefixes, heads, legacy
// LayerNorm names), sharded folders, dtype conversion, and errors that list every mismatch at
// once. Parity with transformers on real saved folders is backbone_parity_test.cpp's.
#include "core/models/hf_checkpoint.h"

#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "tests/core/models/model_test_util.h"

namespace iisan::models {
namespace {

namespace fs = std::filesystem;
using testing::ExpectErrorContaining;
using testing::Parameter;
using testing::TinyBertConfig;
using testing::TinyViTConfig;

fs::path ScratchDir(const std::string& name) {
  const auto dir = fs::path(::testing::TempDir()) / ("hf_checkpoint_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

// The module's parameters as a Hugging Face task model would name them.
NamedTensors StateDict(const torch::nn::Module& module, const std::string& prefix) {
  NamedTensors tensors;
  for (const auto& item : module.named_parameters()) tensors.emplace_back(prefix + item.key(), item.value().detach());
  return tensors;
}

NamedTensors Without(NamedTensors tensors, const std::string& name) {
  std::erase_if(tensors, [&](const auto& item) { return item.first == name; });
  return tensors;
}

void ExpectSameParameters(const torch::nn::Module& actual, const torch::nn::Module& expected) {
  for (const auto& item : expected.named_parameters()) {
    EXPECT_TRUE(torch::equal(Parameter(actual, item.key()), item.value())) << item.key();
  }
}

std::vector<torch::Tensor> RunBert(BertModel& model) {
  torch::NoGradGuard no_grad;
  model->eval();
  const auto ids = torch::tensor({{2, 7, 9, 11, 3}, {2, 5, 3, 0, 0}});
  return model->forward(ids, (ids != 0).to(torch::kInt64));
}

void ExpectClose(const std::vector<torch::Tensor>& actual, const std::vector<torch::Tensor>& expected, double atol) {
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < actual.size(); ++i) {
    EXPECT_TRUE(torch::allclose(actual[i], expected[i], 1e-5, atol))
        << "hidden state " << i << ": max difference " << (actual[i] - expected[i]).abs().max().item<double>();
  }
}

TEST(HfLoadTest, BertTaskModelPrefixAndHeadsAreHandled) {
  torch::manual_seed(1);
  BertModel source(TinyBertConfig());
  testing::RandomizeParameters(*source);
  auto tensors = StateDict(*source, "bert.");
  tensors.emplace_back("cls.predictions.bias", torch::zeros({50}));
  tensors.emplace_back("cls.predictions.transform.dense.weight", torch::zeros({16, 16}));
  tensors.emplace_back("bert.embeddings.position_ids", torch::arange(20).unsqueeze(0));
  const auto folder = ScratchDir("bert_prefixed");
  WriteSafetensors(folder / "model.safetensors", tensors, {{"format", "pt"}});

  torch::manual_seed(2);
  BertModel target(TinyBertConfig());
  ASSERT_FALSE(torch::equal(Parameter(*target, "embeddings.word_embeddings.weight"),
                            Parameter(*source, "embeddings.word_embeddings.weight")));
  LoadBertCheckpoint(target, folder);
  ExpectSameParameters(*target, *source);
  ExpectClose(RunBert(target), RunBert(source), 0.0);
}

// bert-base-uncased's own model.safetensors: "bert." prefix, TF-era LayerNorm.gamma/beta, and
// (for masked-LM checkpoints) no pooler, which forward does not use and so keeps its init.
TEST(HfLoadTest, BertLegacyLayerNormNamesAndMissingPoolerLoad) {
  torch::manual_seed(3);
  BertModel source(TinyBertConfig());
  testing::RandomizeParameters(*source);
  NamedTensors tensors;
  for (auto [name, tensor] : StateDict(*source, "bert.")) {
    if (name.starts_with("bert.pooler.")) continue;
    if (name.ends_with("LayerNorm.weight")) name.replace(name.size() - 6, 6, "gamma");
    if (name.ends_with("LayerNorm.bias")) name.replace(name.size() - 4, 4, "beta");
    tensors.emplace_back(name, tensor);
  }
  const auto folder = ScratchDir("bert_legacy");
  WriteSafetensors(folder / "model.safetensors", tensors);

  torch::manual_seed(4);
  BertModel target(TinyBertConfig());
  const auto pooler_before = Parameter(*target, "pooler.dense.weight").clone();
  LoadBertCheckpoint(target, folder);
  EXPECT_TRUE(torch::equal(Parameter(*target, "embeddings.LayerNorm.weight"),
                           Parameter(*source, "embeddings.LayerNorm.weight")));
  EXPECT_TRUE(torch::equal(Parameter(*target, "pooler.dense.weight"), pooler_before));
  ExpectClose(RunBert(target), RunBert(source), 0.0);
}

TEST(HfLoadTest, ViTClassifierCheckpointLoadsIntoTheEncoder) {
  torch::manual_seed(5);
  ViTModel source(TinyViTConfig());
  testing::RandomizeParameters(*source);
  auto tensors = StateDict(*source, "vit.");
  tensors.emplace_back("classifier.weight", torch::zeros({10, 16}));
  tensors.emplace_back("classifier.bias", torch::zeros({10}));
  const auto folder = ScratchDir("vit_classifier");
  WriteSafetensors(folder / "model.safetensors", tensors);

  torch::manual_seed(6);
  ViTModel target(TinyViTConfig());
  LoadViTCheckpoint(target, folder);
  ExpectSameParameters(*target, *source);
  torch::NoGradGuard no_grad;
  source->eval();
  target->eval();
  const auto pixels = torch::randn({2, 3, 8, 8});
  ExpectClose(target->forward(pixels), source->forward(pixels), 0.0);
}

TEST(HfLoadTest, EncodersBuiltWithoutOurInitLoadTheSameWeights) {
  // WeightInit::kSkip (the cache build, when a checkpoint follows): no random init of ours, no
  // undefined values (the [CLS] token and position table, made empty, are zeros), and after the
  // load the same weights and outputs as an encoder that was initialised first.
  torch::manual_seed(7);
  ViTModel vit_source(TinyViTConfig());
  testing::RandomizeParameters(*vit_source);
  const auto vit_folder = ScratchDir("vit_skip_init");
  WriteSafetensors(vit_folder / "model.safetensors", StateDict(*vit_source, ""));
  ViTModel vit(TinyViTConfig(), PeftConfig{}, WeightInit::kSkip);
  EXPECT_TRUE(torch::equal(Parameter(*vit, "embeddings.cls_token"), torch::zeros({1, 1, 16})));
  for (const auto& p : vit->parameters()) EXPECT_TRUE(torch::isfinite(p).all().item<bool>());
  LoadViTCheckpoint(vit, vit_folder);
  ExpectSameParameters(*vit, *vit_source);
  torch::NoGradGuard no_grad;
  vit->eval();
  vit_source->eval();
  const auto pixels = torch::randn({2, 3, 8, 8});
  ExpectClose(vit->forward(pixels), vit_source->forward(pixels), 0.0);

  BertModel bert_source(TinyBertConfig());
  testing::RandomizeParameters(*bert_source);
  const auto bert_folder = ScratchDir("bert_skip_init");
  WriteSafetensors(bert_folder / "model.safetensors", StateDict(*bert_source, ""));
  BertModel bert(TinyBertConfig(), PeftConfig{}, WeightInit::kSkip);
  for (const auto& p : bert->parameters()) EXPECT_TRUE(torch::isfinite(p).all().item<bool>());
  LoadBertCheckpoint(bert, bert_folder);
  ExpectSameParameters(*bert, *bert_source);
  ExpectClose(RunBert(bert), RunBert(bert_source), 0.0);
}

TEST(HfLoadTest, HalfPrecisionCheckpointIsConvertedToTheModelDtype) {
  torch::manual_seed(7);
  BertModel source(TinyBertConfig());
  NamedTensors tensors;
  for (const auto& [name, tensor] : StateDict(*source, "")) tensors.emplace_back(name, tensor.to(torch::kBFloat16));
  const auto folder = ScratchDir("bert_bf16");
  WriteSafetensors(folder / "model.safetensors", tensors);

  BertModel target(TinyBertConfig());
  LoadBertCheckpoint(target, folder);
  for (const auto& [name, tensor] : tensors) {
    EXPECT_EQ(Parameter(*target, name).scalar_type(), torch::kFloat32) << name;
    EXPECT_TRUE(torch::equal(Parameter(*target, name), tensor.to(torch::kFloat32))) << name;
  }
}

void WriteIndex(const fs::path& folder, const std::map<std::string, std::string>& weight_map) {
  std::ofstream(folder / "model.safetensors.index.json")
      << nlohmann::json{{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}}.dump(2);
}

// Writes the module's tensors alternately into two shards and the index that maps them.
std::map<std::string, std::string> WriteShards(const fs::path& folder, const NamedTensors& tensors) {
  NamedTensors shards[2];
  std::map<std::string, std::string> weight_map;
  for (size_t i = 0; i < tensors.size(); ++i) {
    shards[i % 2].push_back(tensors[i]);
    weight_map[tensors[i].first] = "model-0000" + std::to_string(i % 2 + 1) + "-of-00002.safetensors";
  }
  WriteSafetensors(folder / "model-00001-of-00002.safetensors", shards[0]);
  WriteSafetensors(folder / "model-00002-of-00002.safetensors", shards[1]);
  WriteIndex(folder, weight_map);
  return weight_map;
}

TEST(HfLoadTest, ShardedCheckpointLoads) {
  torch::manual_seed(8);
  ViTModel source(TinyViTConfig());
  testing::RandomizeParameters(*source);
  const auto folder = ScratchDir("sharded");
  WriteShards(folder, StateDict(*source, "vit."));

  EXPECT_TRUE(HasCheckpoint(folder));
  EXPECT_EQ(CheckpointFiles(folder), (std::vector<fs::path>{folder / "model-00001-of-00002.safetensors",
                                                            folder / "model-00002-of-00002.safetensors"}));
  ViTModel target(TinyViTConfig());
  LoadViTCheckpoint(target, folder);
  ExpectSameParameters(*target, *source);
}

TEST(HfLoadTest, InconsistentShardIndexesAreNamed) {
  const BertModel source(TinyBertConfig());
  const auto tensors = StateDict(*source, "");
  const auto folder = ScratchDir("bad_index");
  auto weight_map = WriteShards(folder, tensors);

  auto moved = weight_map;
  moved["embeddings.word_embeddings.weight"] = moved["embeddings.word_embeddings.weight"].ends_with("1-of-00002.safetensors")
                                                   ? "model-00002-of-00002.safetensors"
                                                   : "model-00001-of-00002.safetensors";
  WriteIndex(folder, moved);
  ExpectErrorContaining([&] { ReadCheckpointTensors(folder); },
                        {"model.safetensors.index.json", "'embeddings.word_embeddings.weight'", "does not hold it"});

  auto absent = weight_map;
  absent["pooler.dense.bias"] = "model-00003-of-00003.safetensors";
  WriteIndex(folder, absent);
  ExpectErrorContaining([&] { CheckpointFiles(folder); }, {"shard model-00003-of-00003.safetensors", "missing"});

  auto escaping = weight_map;
  escaping["pooler.dense.bias"] = "../elsewhere/model.safetensors";
  WriteIndex(folder, escaping);
  ExpectErrorContaining([&] { CheckpointFiles(folder); }, {"weight_map['pooler.dense.bias']", "file name of a shard"});

  std::ofstream(folder / "model.safetensors.index.json") << R"({"weights": {}})";
  ExpectErrorContaining([&] { CheckpointFiles(folder); }, {"must be a JSON object with a 'weight_map' object"});
}

TEST(HfLoadTest, EveryMismatchIsListedInOneErrorAndTheModelIsUntouched) {
  torch::manual_seed(9);
  const BertModel source(TinyBertConfig());
  auto tensors = Without(StateDict(*source, "bert."), "bert.encoder.layer.1.output.dense.bias");
  tensors.emplace_back("bert.encoder.layer.7.output.dense.bias", torch::zeros({16}));
  for (auto& [name, tensor] : tensors) {
    if (name == "bert.encoder.layer.0.attention.self.query.weight") tensor = torch::zeros({16, 8});
  }
  const auto folder = ScratchDir("mismatch");
  WriteSafetensors(folder / "model.safetensors", tensors);

  torch::manual_seed(10);
  BertModel target(TinyBertConfig());
  const auto before = Parameter(*target, "embeddings.word_embeddings.weight").clone();
  ExpectErrorContaining([&] { LoadBertCheckpoint(target, folder); },
                        {folder.string(), "1 missing, 1 unexpected, 1 mis-shaped",
                         "missing (the model has them, the checkpoint does not): encoder.layer.1.output.dense.bias",
                         "unexpected (in the checkpoint, not in the model): bert.encoder.layer.7.output.dense.bias",
                         "mis-shaped: bert.encoder.layer.0.attention.self.query.weight (checkpoint [16, 8], model [16, 16])"});
  EXPECT_TRUE(torch::equal(Parameter(*target, "embeddings.word_embeddings.weight"), before));
}

TEST(HfLoadTest, LongMismatchListsAreCapped) {
  NamedTensors foreign;
  for (int i = 0; i < 30; ++i) foreign.emplace_back("decoder.block." + std::to_string(100 + i) + ".weight", torch::zeros({1}));
  BertModel target(TinyBertConfig());
  ExpectErrorContaining([&] { LoadStateDict(*target, foreign, BertStateDictMapping(), "foreign"); },
                        {"foreign: the checkpoint does not fit the model (37 missing, 30 unexpected, 0 mis-shaped)",
                         "decoder.block.119.weight, … and 10 more", ", … and 17 more"});
}

TEST(HfLoadTest, TwoTensorsForOneParameterAreRejected) {
  const BertModel source(TinyBertConfig());
  auto tensors = StateDict(*source, "");
  tensors.emplace_back("bert.pooler.dense.bias", torch::zeros({16}));
  BertModel target(TinyBertConfig());
  ExpectErrorContaining([&] { LoadStateDict(*target, tensors, BertStateDictMapping(), "mixed"); },
                        {"mixed: checkpoint tensors", "'bert.pooler.dense.bias'", "both map to the model's 'pooler.dense.bias'"});
}

TEST(HfLoadTest, PyTorchBinOnlyFolderExplainsTheConversion) {
  const auto folder = ScratchDir("bin_only");
  std::ofstream(folder / "pytorch_model.bin") << "not read";
  EXPECT_TRUE(HasCheckpoint(folder));
  BertModel model(TinyBertConfig());
  ExpectErrorContaining([&] { LoadBertCheckpoint(model, folder); },
                        {folder.string(), "pytorch_model.bin", "AutoModel.from_pretrained('" + folder.string() + "')",
                         ".save_pretrained('" + folder.string() + "', safe_serialization=True)"});
}

TEST(HfLoadTest, FolderWithoutWeightsHasNoCheckpoint) {
  const auto folder = ScratchDir("no_weights");
  std::ofstream(folder / "config.json") << "{}";
  EXPECT_FALSE(HasCheckpoint(folder));
  ExpectErrorContaining([&] { CheckpointFiles(folder); }, {folder.string(), "no model.safetensors or model.safetensors.index.json"});
}

}  // namespace
}  // namespace iisan::models
