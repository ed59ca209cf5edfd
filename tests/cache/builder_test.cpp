// The cache key and the builder: default kept layers, key stability and sensitivity to every
// input, the states written against a direct forward pass, resuming a partial build without
// recomputing its finished chunks, corrupt chunks recomputed, ranks sharing the chunks, and the
// analytic FLOPs of the benchmark hook.
#include "cache/builder.h"

#include <sys/wait.h>
#include <unistd.h>

#include <barrier>
#include <fstream>
#include <numeric>
#include <thread>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cache/partial_build.h"
#include "cache/state_file.h"
#include "cache_test_data.h"
#include "core/data/tokenizer.h"
#include "core/models/backbone_config.h"
#include "core/data/image.h"
#include "core/data/input_error.h"
#include "core/models/bert.h"
#include "core/models/vit.h"
#include "core/models/safetensors.h"

namespace iisan::cache {
namespace {

using testing::WriteText;

TEST(BuilderTest, DefaultKeptLayersEndAtTheLastLayer) {
  EXPECT_EQ(DefaultKeptLayers(12), (std::vector<int>{0, 2, 4, 6, 8, 10, 12}));
  EXPECT_EQ(DefaultKeptLayers(4), (std::vector<int>{0, 2, 4}));
  EXPECT_EQ(DefaultKeptLayers(3), (std::vector<int>{0, 1, 3}));
}

class BuilderFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = testing::FreshDir("builder");
    testing::WriteTinyProblem(root_);
    dataset_ = testing::LoadTinyDataset(root_);
    options_ = testing::TinyOptions(root_);
  }

  std::string Fingerprint() const { return CacheFingerprint(CacheInputs(dataset_, options_)); }

  void ExpectSameStates(const std::filesystem::path& a, const std::filesystem::path& b) {
    const auto left = ReadStateFile(a), right = ReadStateFile(b);
    EXPECT_EQ(left.fingerprint, right.fingerprint);
    EXPECT_EQ(left.items, right.items);
    EXPECT_TRUE(torch::equal(left.text, right.text)) << a << " vs " << b;
    EXPECT_TRUE(torch::equal(left.image, right.image)) << a << " vs " << b;
  }

  std::filesystem::path root_;
  data::Dataset dataset_;
  CacheBuildOptions options_;
};

TEST_F(BuilderFixture, PreprocessingTheBatchesCannotTakeIsRefusedByName) {
  // Without resizing every image keeps its own size, which no batch of the backbones can hold
  // (it once overflowed a buffer in the builder): refused, naming the file and the option.
  WriteText(root_ / "image/preprocessor_config.json", R"({"size": 16, "do_resize": false})");
  try {
    Fingerprint();
    FAIL() << "a cache key for do_resize: false";
  } catch (const data::InputError& error) {
    EXPECT_NE(std::string(error.what()).find("preprocessor_config.json"), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find("do_resize"), std::string::npos) << error.what();
  }
}

TEST_F(BuilderFixture, FingerprintIsStableAndSeesEveryInput) {
  const auto base = Fingerprint();
  EXPECT_EQ(base, Fingerprint());

  // Moving the backbone folders changes nothing; neither do batch and chunk sizes.
  std::filesystem::copy(root_ / "text", root_ / "text2", std::filesystem::copy_options::recursive);
  std::filesystem::copy(root_ / "image", root_ / "image2", std::filesystem::copy_options::recursive);
  options_.text_backbone = root_ / "text2";
  options_.image_backbone = root_ / "image2";
  EXPECT_EQ(base, Fingerprint());
  options_.batch_size = 3;
  options_.chunk_items = 7;
  EXPECT_EQ(base, Fingerprint());
  // Preprocessing written out with its defaults is the same preprocessing.
  WriteText(root_ / "image2/preprocessor_config.json",
            R"({"size": 16, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "do_resize": true})");
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
  EXPECT_TRUE(changed([&] { options_.backbone_init_seed = 99; }));
  EXPECT_TRUE(changed([&] { options_.dtype = torch::kBFloat16; }));
  EXPECT_TRUE(changed([&] { options_.modality = models::Modality::kText; }));
  EXPECT_TRUE(changed([&] { dataset_.titles[3] += " x"; }));
  EXPECT_TRUE(changed([&] { std::swap(dataset_.item_ids[1], dataset_.item_ids[2]); }));
  EXPECT_TRUE(changed([&] {  // the same items in another order
    std::swap(dataset_.item_ids[1], dataset_.item_ids[2]);
    std::swap(dataset_.titles[1], dataset_.titles[2]);
    std::swap(dataset_.image_paths[1], dataset_.image_paths[2]);
  }));
  EXPECT_TRUE(changed([&] { dataset_.item_ids.pop_back(); dataset_.titles.pop_back(); dataset_.image_paths.pop_back(); }));

  const auto file_changed = [&](const std::filesystem::path& path, const std::string& text) {
    std::ifstream in(path);
    const std::string saved((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    WriteText(path, text);
    const bool differs = Fingerprint() != base;
    WriteText(path, saved);
    return differs;
  };
  EXPECT_TRUE(file_changed(root_ / "text2/vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\n"));
  EXPECT_TRUE(file_changed(root_ / "text2/config.json", R"({"vocab_size": 78, "hidden_size": 16, "num_hidden_layers": 2,
      "num_attention_heads": 2, "intermediate_size": 48, "max_position_embeddings": 40})"));
  EXPECT_TRUE(file_changed(root_ / "image2/config.json", R"({"hidden_size": 16, "num_hidden_layers": 2,
      "num_attention_heads": 2, "intermediate_size": 32, "image_size": 16, "patch_size": 4})"));
  EXPECT_TRUE(file_changed(root_ / "image2/preprocessor_config.json", R"({"size": 16, "image_mean": [0.4, 0.5, 0.5]})"));
  EXPECT_TRUE(file_changed(root_ / "image2/preprocessor_config.json", R"({"size": 16, "image_std": [0.5, 0.5, 0.6]})"));
  EXPECT_TRUE(file_changed(root_ / "image2/preprocessor_config.json", R"({"size": 24})"));
  EXPECT_EQ(base, Fingerprint());
  EXPECT_TRUE(changed([&] { std::ofstream(dataset_.image_paths[5], std::ios::app) << "x"; }));

  // Checkpoint weights: adding a model.safetensors changes the key, and so do other bytes in it.
  models::WriteSafetensors(root_ / "text2/model.safetensors", {{"pooler.dense.bias", torch::zeros({16})}});
  const auto with_weights = Fingerprint();
  EXPECT_NE(with_weights, base);
  models::WriteSafetensors(root_ / "text2/model.safetensors", {{"pooler.dense.bias", torch::ones({16})}});
  EXPECT_NE(Fingerprint(), with_weights);
}

TEST_F(BuilderFixture, CachedStatesAreTheBackboneClsRowsOfTheKeptLayers) {
  const auto path = root_ / "cache" / "c.h5";
  const auto stats = BuildStateCache(dataset_, options_, path);
  EXPECT_EQ(stats.chunks_total, 5);  // 48 items in chunks of 10
  EXPECT_EQ(stats.chunks_computed, 5);
  EXPECT_EQ(stats.items_computed, 48);
  EXPECT_FALSE(std::filesystem::exists(PartialBuildDir(path))) << "the partial folder outlived the build";
  const auto file = ReadStateFile(path);
  EXPECT_EQ(file.fingerprint, stats.fingerprint);
  EXPECT_EQ(file.items, dataset_.item_ids);
  ASSERT_EQ(file.text.sizes(), torch::IntArrayRef({dataset_.num_items() + 1, 2, 16}));
  ASSERT_EQ(file.image.sizes(), torch::IntArrayRef({dataset_.num_items() + 1, 2, 16}));
  EXPECT_TRUE(file.text[0].eq(0).all().item<bool>());

  // Recompute item 7's text states directly from the same seeded backbone.
  torch::manual_seed(options_.backbone_init_seed);
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

  // Item 7's image states from the float preprocessing: the builder moves bytes and looks them
  // up on the device, which must give the same input.
  torch::manual_seed(options_.backbone_init_seed + 1);
  models::ViTModel vit(models::ViTConfig::FromJsonFile((root_ / "image/config.json").string()));
  vit->eval();
  const auto preprocess = data::ImagePreprocessConfig::FromJsonFile(root_ / "image/preprocessor_config.json");
  auto pixels = data::PreprocessImage(data::DecodeImage(dataset_.image_paths[7]), preprocess);
  const auto image_hidden = vit->forward(torch::tensor(pixels).view({1, 3, preprocess.height, preprocess.width}));
  EXPECT_TRUE(torch::allclose(file.image[7][0], image_hidden[0][0][0], 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(file.image[7][1], image_hidden[2][0][0], 1e-5, 1e-6));

  // Another chunk size batches the items differently: the same states up to float rounding.
  options_.chunk_items = 48;
  BuildStateCache(dataset_, options_, root_ / "cache" / "d.h5");
  const auto other = ReadStateFile(root_ / "cache" / "d.h5");
  EXPECT_EQ(other.fingerprint, file.fingerprint);
  EXPECT_TRUE(torch::allclose(other.text, file.text, 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(other.image, file.image, 1e-5, 1e-6));
}

TEST_F(BuilderFixture, ResumesFinishedChunksWithoutRecomputingThemAndRedoesCorruptOnes) {
  const auto reference = root_ / "reference.h5";
  BuildStateCache(dataset_, options_, reference);

  // A build that died after chunks 0, 1 and 3: their files exist in the partial folder.
  const auto path = root_ / "cache" / "c.h5";
  const auto inputs = CacheInputs(dataset_, options_);
  ChunkLayout layout{dataset_.num_items(), options_.chunk_items, 2, 16, 16};
  const auto partial = PartialBuild::Prepare(PartialBuildDir(path), CacheFingerprint(inputs), inputs, layout);
  StateComputer computer(dataset_, options_, {0, 2});
  for (int64_t chunk : {0, 1, 3}) {
    std::vector<int64_t> rows(layout.count(chunk));
    std::iota(rows.begin(), rows.end(), layout.begin(chunk));
    const auto states = computer.Compute(rows);
    partial.WriteChunk(chunk, states.text, states.image);
  }
  // Chunk 3's file is corrupted on disk: it must be detected and computed again.
  {
    std::fstream file(PartialBuildDir(path) / "chunk-000003.bin", std::ios::in | std::ios::out | std::ios::binary);
    file.seekg(200);
    const char byte = static_cast<char>(file.get());
    file.seekp(200);
    file.put(static_cast<char>(byte ^ 0x5a));
  }
  const auto stats = BuildStateCache(dataset_, options_, path);
  EXPECT_EQ(stats.chunks_already_done, 3);
  EXPECT_EQ(stats.chunks_computed, 2 + 1) << "chunks 2 and 4, then the corrupt chunk 3 again";
  ExpectSameStates(path, reference);
}

TEST_F(BuilderFixture, PipelinedPartsGiveEachPartsStatesAndAnyThreadCount) {
  // Batches of 7 straddle the parts' ends, so the host thread prepares across part boundaries.
  options_.batch_size = 7;
  const std::vector<std::vector<int64_t>> parts{{1, 2, 3, 4, 5}, {}, {6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17}, {48, 20}};
  for (int threads : {1, 3}) {
    options_.threads = threads;
    StateComputer computer(dataset_, options_, {0, 2});
    std::vector<size_t> order;
    computer.ComputeParts(parts, [&](size_t part, StateComputer::Rows rows) {
      order.push_back(part);
      StateComputer alone(dataset_, options_, {0, 2});
      const auto expected = parts[part].empty() ? StateComputer::Rows{} : alone.Compute(parts[part]);
      ASSERT_EQ(rows.text.defined(), expected.text.defined()) << "part " << part;
      if (!expected.text.defined()) return;
      EXPECT_TRUE(torch::allclose(rows.text, expected.text, 1e-5, 1e-6)) << "part " << part << ", threads " << threads;
      EXPECT_TRUE(torch::allclose(rows.image, expected.image, 1e-5, 1e-6)) << "part " << part << ", threads " << threads;
    });
    EXPECT_EQ(order, (std::vector<size_t>{0, 1, 2, 3}));
    EXPECT_GT(computer.times().prepare, 0.0);
  }
}

TEST_F(BuilderFixture, AHostErrorInALaterPartIsRethrownAfterTheEarlierPartsAreDone) {
  options_.batch_size = 4;
  std::filesystem::remove(dataset_.image_paths[30]);
  StateComputer computer(dataset_, options_, {0, 2});
  std::vector<size_t> done;
  try {
    computer.ComputeParts({{1, 2, 3, 4}, {5, 6, 7, 8}, {29, 30, 31}, {40}},
                          [&](size_t part, StateComputer::Rows) { done.push_back(part); });
    FAIL() << "a missing image went unnoticed";
  } catch (const std::exception& error) {
    EXPECT_NE(std::string(error.what()).find(dataset_.image_paths[30].filename().string()), std::string::npos)
        << error.what();
  }
  EXPECT_EQ(done, (std::vector<size_t>{0, 1}));
}

TEST_F(BuilderFixture, TemporaryFilesOfKilledWritersAreRemovedAndLiveOnesKept) {
  const auto path = root_ / "cache" / "c.h5";
  std::filesystem::create_directories(path.parent_path());
  // A process that has exited: its pid no longer exists.
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ASSERT_GT(child, 0);
  ::waitpid(child, nullptr, 0);
  auto temp_of = [&](long pid) {
    auto temp = path;
    temp += ".tmp." + std::to_string(pid);
    WriteText(temp, "half an HDF5 file");
    return temp;
  };
  const auto dead = temp_of(child);
  const auto live = temp_of(1);  // init runs for as long as the machine does
  BuildStateCache(dataset_, options_, path);
  EXPECT_FALSE(std::filesystem::exists(dead)) << "the killed writer's temporary file outlived the next build";
  EXPECT_TRUE(std::filesystem::exists(live)) << "a running writer's temporary file was removed";
  EXPECT_TRUE(std::filesystem::exists(path));
}

TEST_F(BuilderFixture, APartialBuildOfOtherInputsIsDiscarded) {
  const auto path = root_ / "cache" / "c.h5";
  const auto inputs = CacheInputs(dataset_, options_);
  ChunkLayout layout{dataset_.num_items(), options_.chunk_items, 2, 16, 16};
  const auto stale = PartialBuild::Prepare(PartialBuildDir(path), "00000000deadbeef", inputs, layout);
  stale.WriteChunk(0, torch::zeros({10, 2, 16}), torch::zeros({10, 2, 16}));
  const auto stats = BuildStateCache(dataset_, options_, path);
  EXPECT_EQ(stats.chunks_already_done, 0);
  EXPECT_EQ(stats.chunks_computed, 5);
  const auto reference = root_ / "reference.h5";
  BuildStateCache(dataset_, options_, reference);
  ExpectSameStates(path, reference);
}

TEST_F(BuilderFixture, RanksShareTheChunksAndRankZeroAssemblesTheSameFile) {
  const auto reference = root_ / "reference.h5";
  BuildStateCache(dataset_, options_, reference);
  const auto path = root_ / "cache" / "ranks.h5";
  constexpr int kRanks = 3;
  std::barrier sync(kRanks);
  std::vector<BuildStats> stats(kRanks);
  std::vector<std::thread> ranks;
  for (int rank = 0; rank < kRanks; ++rank) {
    ranks.emplace_back([&, rank] {
      BuildControl control;
      control.rank = rank;
      control.world_size = kRanks;
      control.barrier = [&] { sync.arrive_and_wait(); };
      stats[rank] = BuildStateCache(dataset_, options_, path, control);
    });
  }
  for (auto& thread : ranks) thread.join();
  // 5 chunks over 3 ranks: 2, 2 and 1.
  EXPECT_EQ(stats[0].chunks_computed, 2);
  EXPECT_EQ(stats[1].chunks_computed, 2);
  EXPECT_EQ(stats[2].chunks_computed, 1);
  ExpectSameStates(path, reference);
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

TEST_F(BuilderFixture, ForwardFlopsFollowTheBaseSizeArithmetic) {
  WriteText(root_ / "base_text/config.json", R"({"vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12,
    "num_attention_heads": 12, "intermediate_size": 3072})");
  WriteText(root_ / "base_image/config.json", R"({"hidden_size": 768, "num_hidden_layers": 12,
    "num_attention_heads": 12, "intermediate_size": 3072, "image_size": 224, "patch_size": 16})");
  options_.text_backbone = root_ / "base_text";
  options_.image_backbone = root_ / "base_image";
  options_.title_max_tokens = 30;
  const auto flops = ForwardFlopsPerItem(options_);
  // Per token and layer: 4*768^2 + 2*768*3072 + 2*T*768 multiply-adds; 2 FLOPs each.
  EXPECT_DOUBLE_EQ(flops.text, 2.0 * (4.0 * 768 * 768 + 2.0 * 768 * 3072 + 2.0 * 30 * 768) * 30 * 12);
  const double patch = 2.0 * 196 * (3 * 16 * 16 * 768);
  EXPECT_DOUBLE_EQ(flops.image, patch + 2.0 * (4.0 * 768 * 768 + 2.0 * 768 * 3072 + 2.0 * 197 * 768) * 197 * 12);
  EXPECT_NEAR(flops.image / 1e9, 35.2, 0.5);  // ViT-B/16 is the well-known ~17.6 GMACs
}

}  // namespace
}  // namespace iisan::cache
