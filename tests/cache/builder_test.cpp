// The cache builder: default kept layers, fingerprint stability and sensitivity, and the
// states it writes against a direct forward pass of the same backbone.
#include "cache/builder.h"

#include <fstream>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cache/state_file.h"
#include "core/data/synthetic.h"
#include "core/data/tokenizer.h"
#include "core/models/backbone_config.h"
#include "core/models/bert.h"
#include "core/models/safetensors.h"

namespace iisan::cache {
namespace {

namespace fs = std::filesystem;

TEST(BuilderTest, DefaultKeptLayersEndAtTheLastLayer) {
  EXPECT_EQ(DefaultKeptLayers(12), (std::vector<int>{0, 2, 4, 6, 8, 10, 12}));
  EXPECT_EQ(DefaultKeptLayers(4), (std::vector<int>{0, 2, 4}));
  EXPECT_EQ(DefaultKeptLayers(3), (std::vector<int>{0, 1, 3}));
}

void WriteText(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path) << text;
}

// A small synthetic dataset and tiny backbones (text and image) in a fresh folder.
class BuilderFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::path(::testing::TempDir()) / ("builder_" + std::string(
        ::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(root_);
    data::SynthOptions synth;
    synth.num_users = 60;
    synth.num_items = 48;
    synth.num_categories = 4;
    synth.image_size = 16;
    data::WriteSyntheticDataset(root_ / "data", synth);
    data::PreprocessOptions preprocess;
    preprocess.require_images = true;
    dataset_ = data::LoadDataset(root_ / "data", preprocess);

    std::string vocab = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n";
    for (char c = 'a'; c <= 'z'; ++c) vocab += std::string(1, c) + "\n##" + std::string(1, c) + "\n";
    for (char c = '0'; c <= '9'; ++c) vocab += std::string(1, c) + "\n##" + std::string(1, c) + "\n";
    vocab += "-\n";
    WriteText(root_ / "text/vocab.txt", vocab);
    WriteText(root_ / "text/config.json", R"({"vocab_size": 78, "hidden_size": 16, "num_hidden_layers": 2,
      "num_attention_heads": 2, "intermediate_size": 32, "max_position_embeddings": 40})");
    WriteText(root_ / "image/config.json", R"({"hidden_size": 16, "num_hidden_layers": 2,
      "num_attention_heads": 2, "intermediate_size": 32, "image_size": 16, "patch_size": 8})");
    WriteText(root_ / "image/preprocessor_config.json", R"({"size": 16})");
    options_.text_backbone = root_ / "text";
    options_.image_backbone = root_ / "image";
    options_.batch_size = 20;
  }

  std::string Fingerprint() const { return CacheFingerprint(CacheInputs(dataset_, options_)); }

  fs::path root_;
  data::Dataset dataset_;
  CacheBuildOptions options_;
};

TEST_F(BuilderFixture, FingerprintIsStableAndSeesEveryInput) {
  const auto base = Fingerprint();
  EXPECT_EQ(base, Fingerprint());

  // Moving the backbone folders changes nothing.
  fs::copy(root_ / "text", root_ / "text2", fs::copy_options::recursive);
  options_.text_backbone = root_ / "text2";
  EXPECT_EQ(base, Fingerprint());

  const auto changed = [&](auto mutate) {
    auto saved_options = options_;
    auto saved_dataset = dataset_;
    mutate();
    const auto other = Fingerprint();
    options_ = saved_options;
    dataset_ = saved_dataset;
    return other != base;
  };
  EXPECT_TRUE(changed([&] { options_.kept_layers = {0, 1}; }));
  EXPECT_TRUE(changed([&] { options_.title_max_tokens = 20; }));
  EXPECT_TRUE(changed([&] { options_.seed = 99; }));
  EXPECT_TRUE(changed([&] { options_.modality = models::Modality::kText; }));
  EXPECT_TRUE(changed([&] { dataset_.titles[3] += " x"; }));
  EXPECT_TRUE(changed([&] { std::swap(dataset_.item_ids[1], dataset_.item_ids[2]); }));
  EXPECT_TRUE(changed([&] { WriteText(root_ / "text2/vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\n"); }));
  EXPECT_TRUE(changed([&] {
    WriteText(root_ / "text2/config.json", R"({"vocab_size": 78, "hidden_size": 16, "num_hidden_layers": 2,
      "num_attention_heads": 2, "intermediate_size": 48, "max_position_embeddings": 40})");
  }));
  EXPECT_TRUE(changed([&] {
    std::ofstream(dataset_.image_paths[5], std::ios::app) << "x";
  }));

  // Checkpoint weights: adding a model.safetensors changes the key, and so do other bytes in it.
  models::WriteSafetensors(root_ / "text2/model.safetensors", {{"pooler.dense.bias", torch::zeros({16})}});
  const auto with_weights = Fingerprint();
  EXPECT_NE(with_weights, base);
  models::WriteSafetensors(root_ / "text2/model.safetensors", {{"pooler.dense.bias", torch::ones({16})}});
  EXPECT_NE(Fingerprint(), with_weights);
}

TEST_F(BuilderFixture, CachedStatesAreTheBackboneClsRowsOfTheKeptLayers) {
  const auto path = root_ / "cache" / "c.h5";
  const auto fingerprint = BuildStateCache(dataset_, options_, path);
  const auto file = ReadStateFile(path);
  EXPECT_EQ(file.fingerprint, fingerprint);
  EXPECT_EQ(file.items, dataset_.item_ids);
  ASSERT_EQ(file.text.sizes(), torch::IntArrayRef({dataset_.num_items() + 1, 2, 16}));
  ASSERT_EQ(file.image.sizes(), torch::IntArrayRef({dataset_.num_items() + 1, 2, 16}));
  EXPECT_TRUE(file.text[0].eq(0).all().item<bool>());

  // Recompute item 7's text states directly from the same seeded backbone.
  torch::manual_seed(options_.seed);
  models::BertModel bert(models::BertConfig::FromJsonFile((root_ / "text/config.json").string()));
  bert->eval();
  const auto tokenizer = data::WordPieceTokenizer::FromVocabFile(root_ / "text/vocab.txt");
  const auto encoded = tokenizer.Encode(dataset_.titles[7], 30);
  torch::NoGradGuard no_grad;
  const auto ids = torch::tensor(std::vector<int64_t>(encoded.input_ids.begin(), encoded.input_ids.end())).unsqueeze(0);
  const auto mask = torch::tensor(std::vector<int64_t>(encoded.attention_mask.begin(), encoded.attention_mask.end())).unsqueeze(0);
  const auto hidden = bert->forward(ids, mask);
  EXPECT_TRUE(torch::allclose(file.text[7][0], hidden[0][0][0], 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(file.text[7][1], hidden[2][0][0], 1e-5, 1e-6));

  // A second build gives identical bytes-for-bytes states.
  BuildStateCache(dataset_, options_, root_ / "cache" / "d.h5");
  const auto again = ReadStateFile(root_ / "cache" / "d.h5");
  EXPECT_TRUE(torch::equal(file.text, again.text));
  EXPECT_TRUE(torch::equal(file.image, again.image));
}

TEST_F(BuilderFixture, MismatchedBackboneDepthsNeedExplicitKeptLayers) {
  WriteText(root_ / "image/config.json", R"({"hidden_size": 16, "num_hidden_layers": 4,
    "num_attention_heads": 2, "intermediate_size": 32, "image_size": 16, "patch_size": 8})");
  EXPECT_THROW(ResolveKeptLayers(options_), CacheError);
  options_.kept_layers = {0, 2};
  EXPECT_EQ(ResolveKeptLayers(options_), (std::vector<int>{0, 2}));
  options_.kept_layers = {0, 3};
  EXPECT_THROW(ResolveKeptLayers(options_), CacheError);
}

}  // namespace
}  // namespace iisan::cache
