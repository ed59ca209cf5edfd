// A partial cache build's files under fuzzing (tests/fuzz_mutator.h): a damaged manifest.json is
// never trusted for another build (Attach refuses it with a CacheError naming the folder,
// Prepare starts over), `iisan cache ls`'s InspectPartialBuild reports it without throwing and
// in bounded time whatever counts it claims; a damaged chunk file is either refused (and
// removed) or read back exactly as written.
#include "cache/partial_build.h"

#include <filesystem>
#include <fstream>
#include <iterator>

#include <glog/logging.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cache/builder.h"
#include "cache/state_file.h"
#include "tests/core/data/test_files.h"
#include "tests/fuzz_mutator.h"

namespace iisan::cache {
namespace {

namespace fs = std::filesystem;
using iisan::testing::FuzzMutator;
using iisan::testing::FuzzRequire;
using iisan::testing::RunFuzz;
using data::testing::ReadBytes;

constexpr char kKey[] = "0123456789abcdef";

void WriteBytes(const fs::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

class PartialBuildFuzzTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Each refused manifest or chunk logs a warning: thousands of lines.
    saved_level_ = FLAGS_minloglevel;
    FLAGS_minloglevel = google::GLOG_ERROR;
    root_ = fs::path(::testing::TempDir()) / ("partial_build_fuzz_" +
                                              std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(root_);
    dir_ = root_ / "c.h5.partial";
  }
  void TearDown() override {
    FLAGS_minloglevel = saved_level_;
    fs::remove_all(root_);
  }

  ChunkLayout layout_{23, 5, 2, 3, 4};
  fs::path root_, dir_;
  int saved_level_ = 0;
};

TEST_F(PartialBuildFuzzTest, DamagedManifestsAreNeverTrustedAndAlwaysInspectable) {
  const nlohmann::json inputs = {{"kept_layers", {0, 2}}, {"items", 23}};
  PartialBuild::Prepare(dir_, kKey, inputs, layout_);
  const std::string valid = ReadBytes(dir_ / "manifest.json");
  FuzzMutator mutator(501,
                      {valid, nlohmann::json{{"fingerprint", kKey},
                                             {"layout",
                                              {{"items", 2147483647}, {"chunk_items", 1}, {"kept_layers", 4096},
                                               {"text_dim", 65536}, {"image_dim", 65536}}}}
                                  .dump()},
                      {"\"items\"", "\"chunk_items\"", "\"layout\"", "\"fingerprint\"", "\"text_dim\"", "null", "{",
                       "}", "[", "]", ",", ":"});
  int64_t iteration = 0;
  const auto outcome = RunFuzz<iisan::testing::NoExceptionExpected>(
      mutator, 1500,
      [&](const std::string& manifest) {
        fs::create_directories(dir_);
        WriteBytes(dir_ / "manifest.json", manifest);
        // `iisan cache ls`: whatever the manifest claims, an answer without an exception.
        const PartialBuildInfo info = InspectPartialBuild(dir_);
        FuzzRequire(info.fingerprint.empty() || (info.chunks_done >= 0 && info.chunks_done <= info.chunks_total),
                    "chunks done within the total");
        // A rank joining the build trusts only the manifest of this very key and layout.
        const bool same = manifest == valid;
        try {
          PartialBuild::Attach(dir_, kKey, layout_);
          FuzzRequire(nlohmann::json::parse(manifest, nullptr, false).is_object(), "Attach trusts only a JSON object");
        } catch (const CacheError& error) {
          FuzzRequire(!same, "Attach refuses the manifest it was written with");
          FuzzRequire(std::string(error.what()).rfind(dir_.string() + ": ", 0) == 0, "the error names the folder");
        }
        // Rank 0 resumes it or starts over; either way the folder then holds this build. (Every
        // fifth input: starting over writes and syncs a manifest, the slow part.)
        if (++iteration % 5 != 0) return;
        const auto build = PartialBuild::Prepare(dir_, kKey, inputs, layout_);
        FuzzRequire(build.layout() == layout_, "Prepare gives this build's layout");
        PartialBuild::Attach(dir_, kKey, layout_);
      });
  EXPECT_GT(outcome.parsed, 0);
}

// Found by the fuzzing above: `iisan cache ls` probed every chunk a manifest claimed, so a manifest
// of 2^31 chunks took hours, and one of 2^62 items overflowed the chunk sizes. The folder is
// listed now, and counts past what a cache can hold make the manifest unreadable.
TEST_F(PartialBuildFuzzTest, ManifestsClaimingHugeCountsAreInspectedAtOnce) {
  PartialBuild::Prepare(dir_, kKey, nlohmann::json::object(), layout_).WriteChunk(
      1, torch::zeros({5, 2, 3}), torch::zeros({5, 2, 4}));
  nlohmann::json manifest = {{"fingerprint", kKey},
                             {"layout",
                              {{"items", 2147483647}, {"chunk_items", 1}, {"kept_layers", 2}, {"text_dim", 3},
                               {"image_dim", 4}}}};
  WriteBytes(dir_ / "manifest.json", manifest.dump());
  auto info = InspectPartialBuild(dir_);
  EXPECT_EQ(info.fingerprint, kKey);
  EXPECT_EQ(info.chunks_total, 2147483647);
  EXPECT_EQ(info.chunks_done, 0) << "chunk-000001.bin has the size of a 5-row chunk, not of a 1-row one";
  for (const auto& [field, value] : std::vector<std::pair<std::string, int64_t>>{
           {"items", int64_t{1} << 62}, {"chunk_items", 0}, {"kept_layers", 5000}, {"text_dim", -1}}) {
    auto bad = manifest;
    bad["layout"][field] = value;
    WriteBytes(dir_ / "manifest.json", bad.dump());
    info = InspectPartialBuild(dir_);
    EXPECT_TRUE(info.fingerprint.empty()) << field << " = " << value << " was taken for a build";
  }
}

TEST_F(PartialBuildFuzzTest, DamagedChunksAreRefusedOrReadBackExactly) {
  const auto build = PartialBuild::Prepare(dir_, kKey, nlohmann::json::object(), layout_);
  torch::manual_seed(3);
  const int64_t chunk = 4;  // the last, short chunk: rows 21..23
  const auto text = torch::randn({layout_.count(chunk), 2, 3});
  const auto image = torch::randn({layout_.count(chunk), 2, 4});
  build.WriteChunk(chunk, text, image);
  const auto path = dir_ / "chunk-000004.bin";
  const std::string valid = ReadBytes(path);
  build.WriteChunk(0, torch::zeros({5, 2, 3}), torch::ones({5, 2, 4}));
  FuzzMutator mutator(502, {valid, ReadBytes(dir_ / "chunk-000000.bin")});
  int64_t refused = 0;
  const auto outcome = RunFuzz<iisan::testing::NoExceptionExpected>(mutator, 1500, [&](const std::string& bytes) {
    WriteBytes(path, bytes);
    const bool looks_whole = build.HasChunk(chunk);
    const auto rows = build.ReadChunk(chunk);
    if (!rows) {
      ++refused;
      FuzzRequire(!fs::exists(path), "a refused chunk is removed, to be computed again");
      return;
    }
    FuzzRequire(looks_whole, "a chunk that reads back had the expected size");
    FuzzRequire(torch::equal(rows->first, text) && torch::equal(rows->second, image),
                "a chunk that reads back holds exactly what was written");
  });
  EXPECT_GT(refused, 0);
  EXPECT_GT(outcome.parsed - refused, 0) << "some mutations leave the file as it was (e.g. a truncation at its end)";
}

}  // namespace
}  // namespace iisan::cache
