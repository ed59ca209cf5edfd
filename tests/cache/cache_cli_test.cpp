// `iisan cache key|build|ls|verify|rm|serve` as a user runs them: a build killed with SIGKILL
// resumes without recomputing its finished chunks and ends bitwise equal to an uninterrupted
// build; concurrent builds of one key build once (file lock, and through the service); ranks
// under `iisan launch` share a build; broken caches are rebuilt where the cache owns the path and
// refused where the user named it.
#include <hdf5.h>

#include <csignal>
#include <fstream>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "cache/builder.h"
#include "cache/digest.h"
#include "cache/partial_build.h"
#include "cache/service.h"
#include "cache/state_file.h"
#include "cache_test_data.h"

namespace iisan::cache {
namespace {

using testing::CountOccurrences;
using testing::RunIisan;
namespace fs = std::filesystem;

class CacheCliFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = testing::FreshDir("cli");
    testing::WriteTinyProblem(root_);
  }
  std::string Args(const fs::path& cache_dir) const { return testing::TinyConfigArgs(root_, cache_dir); }
  std::string Key(const std::string& more = "") {
    const auto result = RunIisan("cache key" + Args(root_ / "cache") + more);
    EXPECT_EQ(result.exit_code, 0) << result.output;
    // The line "<key>  <path>" among the log lines.
    std::istringstream lines(result.output);
    for (std::string line; std::getline(lines, line);) {
      if (line.size() > 18 && IsCacheKey(line.substr(0, 16)) && line.substr(16, 2) == "  ") return line.substr(0, 16);
    }
    ADD_FAILURE() << "no key in: " << result.output;
    return "";
  }
  void ExpectSameStates(const fs::path& a, const fs::path& b) {
    const auto left = ReadStateFile(a), right = ReadStateFile(b);
    EXPECT_EQ(left.fingerprint, right.fingerprint);
    EXPECT_TRUE(torch::equal(left.text, right.text));
    EXPECT_TRUE(torch::equal(left.image, right.image));
  }
  fs::path root_;
};

nlohmann::json ReadJson(const fs::path& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

TEST_F(CacheCliFixture, KeyIsStableAndFollowsTheConfig) {
  const auto key = Key();
  EXPECT_TRUE(IsCacheKey(key)) << key;
  EXPECT_EQ(Key(), key);
  const auto other = RunIisan("cache key" + Args(root_ / "cache") + " --set model.title_max_tokens=12");
  EXPECT_EQ(other.output.find(key), std::string::npos) << other.output;
  const auto bad = RunIisan("cache key" + Args(root_ / "cache") + " --set cache.dtype=float16");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.output.find("cache.dtype"), std::string::npos) << bad.output;
  // cache.dtype=auto (the default) is float32 on the CPU: the float32 key; bfloat16 is another.
  EXPECT_EQ(Key(" --set cache.dtype=float32"), key);
  EXPECT_EQ(Key(" --set cache.dtype=auto"), key);
  EXPECT_NE(Key(" --set cache.dtype=bfloat16"), key);
}

TEST_F(CacheCliFixture, AKilledBuildResumesFromItsFinishedChunks) {
  const auto key = Key();
  const auto cache = root_ / "cache" / (key + ".h5");
  // 48 items in chunks of 8: 6 chunks; the process dies (SIGKILL) after its 2nd chunk.
  const auto killed = RunIisan("cache build" + Args(root_ / "cache"), std::string(kEnvKillAfterChunk) + "=2");
  EXPECT_EQ(killed.exit_code, 128 + SIGKILL) << killed.output;
  EXPECT_FALSE(fs::exists(cache)) << "a killed build left a final cache";
  EXPECT_TRUE(fs::exists(PartialBuildDir(cache) / "chunk-000001.bin"));
  const auto listed = RunIisan("cache ls" + Args(root_ / "cache"));
  EXPECT_NE(listed.output.find("partial 2/6"), std::string::npos) << listed.output;

  const auto stats_path = root_ / "resumed.json";
  const auto resumed = RunIisan("cache build" + Args(root_ / "cache") + " --stats-out " + stats_path.string());
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("resuming: 2 of 6 chunks already done"), std::string::npos) << resumed.output;
  const auto stats = ReadJson(stats_path);
  EXPECT_EQ(stats["chunks_already_done"], 2);
  EXPECT_EQ(stats["chunks_computed"], 4) << "finished chunks were computed again";
  EXPECT_EQ(stats["items_computed"], 48 - 16);
  EXPECT_GT(stats["flops_per_item"]["total"].get<double>(), 0);
  EXPECT_TRUE(fs::exists(root_ / "cache" / (key + ".stats.json")));
  EXPECT_FALSE(fs::exists(PartialBuildDir(cache)));

  const auto whole = RunIisan("cache build" + Args(root_ / "whole"));
  ASSERT_EQ(whole.exit_code, 0) << whole.output;
  ExpectSameStates(cache, root_ / "whole" / (key + ".h5"));

  const auto again = RunIisan("cache build" + Args(root_ / "cache"));
  EXPECT_NE(again.output.find("cache up to date"), std::string::npos) << again.output;
}

// A build killed after it committed the cache but before it removed its partial folder: the next
// build finds the cache up to date and finishes the cleanup.
TEST_F(CacheCliFixture, APartialFolderLeftBesideACommittedCacheIsRemoved) {
  const auto key = Key();
  const auto cache = root_ / "cache" / (key + ".h5");
  ASSERT_EQ(RunIisan("cache build" + Args(root_ / "cache")).exit_code, 0);
  const auto partial = PartialBuildDir(cache);
  PartialBuild::Prepare(partial, key, nlohmann::json::object(), ChunkLayout{48, 8, 2, 16, 16})
      .WriteChunk(0, torch::zeros({8, 2, 16}), torch::zeros({8, 2, 16}));
  const auto again = RunIisan("cache build" + Args(root_ / "cache"));
  EXPECT_EQ(again.exit_code, 0) << again.output;
  EXPECT_NE(again.output.find("cache up to date"), std::string::npos) << again.output;
  EXPECT_FALSE(fs::exists(partial)) << again.output;
  EXPECT_NO_THROW(ReadStateFile(cache));
}

TEST_F(CacheCliFixture, ConcurrentBuildsOfOneKeyBuildOnce) {
  constexpr int kProcesses = 4;
  std::vector<testing::CommandResult> results(kProcesses);
  std::vector<std::thread> threads;
  for (int i = 0; i < kProcesses; ++i) {
    threads.emplace_back([&, i] { results[i] = RunIisan("cache build" + Args(root_ / "cache")); });
  }
  for (auto& thread : threads) thread.join();
  std::string all;
  for (const auto& result : results) {
    EXPECT_EQ(result.exit_code, 0) << result.output;
    all += result.output;
  }
  EXPECT_EQ(CountOccurrences(all, "cache built:"), 1u) << all;
  EXPECT_EQ(CountOccurrences(all, "cache up to date:"), static_cast<size_t>(kProcesses - 1)) << all;
}

TEST_F(CacheCliFixture, RanksUnderLaunchShareOneBuild) {
  const auto key = Key();
  const auto stats_path = root_ / "ranks.json";
  const auto ranks = RunIisan("launch --nproc 2 -- cache build" + Args(root_ / "ranks") + " --stats-out " +
                              stats_path.string());
  ASSERT_EQ(ranks.exit_code, 0) << ranks.output;
  const auto stats = ReadJson(stats_path);
  EXPECT_EQ(stats["world_size"], 2);
  EXPECT_EQ(stats["chunks_computed"], 3) << "rank 0 computes chunks 0, 2, 4 of 6";
  const auto single = RunIisan("cache build" + Args(root_ / "single"));
  ASSERT_EQ(single.exit_code, 0) << single.output;
  ExpectSameStates(root_ / "ranks" / (key + ".h5"), root_ / "single" / (key + ".h5"));
}

void SetStringAttribute(const fs::path& path, const std::string& name, const std::string& value) {
  hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  ASSERT_GE(file, 0);
  H5Adelete(file, name.c_str());
  hid_t type = H5Tcopy(H5T_C_S1);
  H5Tset_size(type, value.size());
  H5Tset_strpad(type, H5T_STR_NULLPAD);
  hid_t space = H5Screate(H5S_SCALAR);
  hid_t attr = H5Acreate2(file, name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(attr, type, value.data());
  H5Aclose(attr);
  H5Sclose(space);
  H5Tclose(type);
  H5Fclose(file);
}

TEST_F(CacheCliFixture, BrokenCachesAreRebuiltInTheCacheDirAndRefusedAtAUserPath) {
  const auto key = Key();
  const auto cache = root_ / "cache" / (key + ".h5");
  ASSERT_EQ(RunIisan("cache build" + Args(root_ / "cache")).exit_code, 0);
  const auto reference = root_ / "reference.h5";
  fs::copy_file(cache, reference);

  // Truncated: detected, rebuilt.
  fs::resize_file(cache, fs::file_size(cache) / 2);
  auto result = RunIisan("cache build" + Args(root_ / "cache"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("rebuilding it"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("cache built:"), std::string::npos) << result.output;
  ExpectSameStates(cache, reference);

  // A flipped fingerprint attribute: detected, rebuilt.
  SetStringAttribute(cache, "fingerprint", "0000000000000000");
  result = RunIisan("cache build" + Args(root_ / "cache"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("built from other inputs"), std::string::npos) << result.output;
  ExpectSameStates(cache, reference);

  // The cache of another item list given as cache.path: refused, naming the file, untouched.
  const auto other = root_ / "other";
  testing::WriteTinyProblem(other, 40, 99);
  const auto foreign = root_ / "foreign.h5";
  ASSERT_EQ(RunIisan("cache build" + testing::TinyConfigArgs(other, root_ / "other_cache") +
                     " --set cache.path=" + foreign.string()).exit_code, 0);
  const auto size = fs::file_size(foreign);
  result = RunIisan("cache build" + Args(root_ / "cache") + " --set cache.path=" + foreign.string());
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_NE(result.output.find(foreign.string()), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("delete the file"), std::string::npos) << result.output;
  EXPECT_EQ(fs::file_size(foreign), size);
  result = RunIisan("train" + Args(root_ / "cache") + " --set cache.path=" + foreign.string() +
                    " --set train.epochs=1 --set run_root=" + (root_ / "runs").string());
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_NE(result.output.find(foreign.string()), std::string::npos) << result.output;
}

TEST_F(CacheCliFixture, VerifyListAndRemove) {
  const auto key = Key();
  const auto cache = root_ / "cache" / (key + ".h5");
  ASSERT_EQ(RunIisan("cache build" + Args(root_ / "cache")).exit_code, 0);
  auto result = RunIisan("cache verify" + Args(root_ / "cache") + " --rows 6");
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("cache OK"), std::string::npos) << result.output;

  // Every row of the text table scaled: verify must notice whichever rows it samples.
  {
    auto text = ReadStateFile(cache).text;
    text.mul_(1.01);
    hid_t file = H5Fopen(cache.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t set = H5Dopen2(file, "/text/hidden", H5P_DEFAULT);
    H5Dwrite(set, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, text.data_ptr<float>());
    H5Dclose(set);
    H5Fclose(file);
  }
  result = RunIisan("cache verify" + Args(root_ / "cache") + " --rows 4");
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_NE(result.output.find("differ from a fresh forward pass"), std::string::npos) << result.output;

  result = RunIisan("cache ls" + Args(root_ / "cache"));
  EXPECT_NE(result.output.find(key), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("complete"), std::string::npos) << result.output;
  // Only key-named caches inside cache.dir: the folder itself, a file outside it, a key-named
  // file elsewhere and a relative path out of it are all refused, and nothing is touched.
  const auto outside = root_ / "precious";
  fs::create_directories(outside);
  std::ofstream(outside / (key + ".h5")) << "not a cache";
  std::ofstream(outside / "notes.txt") << "keep me";
  for (const std::string& target : {(root_ / "cache").string(), (outside / "notes.txt").string(),
                                    (outside / (key + ".h5")).string(),
                                    (root_ / "cache" / ".." / "precious" / (key + ".h5")).string(), std::string("cache")}) {
    result = RunIisan("cache rm " + target + Args(root_ / "cache"));
    EXPECT_EQ(result.exit_code, 1) << target << ": " << result.output;
    EXPECT_NE(result.output.find("Nothing was removed"), std::string::npos) << target << ": " << result.output;
  }
  EXPECT_TRUE(fs::exists(cache));
  EXPECT_TRUE(fs::exists(outside / (key + ".h5")));
  EXPECT_TRUE(fs::exists(outside / "notes.txt"));
  result = RunIisan("cache rm " + key + Args(root_ / "cache"));
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_FALSE(fs::exists(cache));
  result = RunIisan("cache rm " + key + Args(root_ / "cache"));
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_NE(result.output.find("no such cache"), std::string::npos) << result.output;
}

TEST_F(CacheCliFixture, BuildsThroughTheServiceWhenOneIsConfigured) {
  const auto socket = root_ / "svc" / "s.sock";
  const std::string serve = std::string(IISAN_BINARY) + " cache serve --socket " + socket.string() +
                            Args(root_ / "service_cache") + " > " + (root_ / "serve.log").string() + " 2>&1 & echo $!";
  const auto started = testing::RunShell(serve);
  const int pid = std::atoi(started.output.c_str());
  ASSERT_GT(pid, 0) << started.output;
  // The service must not outlive a failed assertion: stopped here unless the test stops it.
  struct StopService {
    int pid;
    bool stopped = false;
    ~StopService() {
      if (!stopped) ::kill(pid, SIGTERM);
    }
  } service{pid};
  for (int i = 0; i < 300 && !fs::exists(socket); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_TRUE(fs::exists(socket)) << "the service did not start";

  std::vector<testing::CommandResult> results(3);
  std::vector<std::thread> threads;
  for (int i = 0; i < 3; ++i) {
    threads.emplace_back([&, i] {
      results[i] = RunIisan("cache build" + Args(root_ / "client_cache") + " --set cache.service=" + socket.string());
    });
  }
  for (auto& thread : threads) thread.join();
  for (const auto& result : results) {
    EXPECT_EQ(result.exit_code, 0) << result.output;
    EXPECT_NE(result.output.find((root_ / "service_cache").string()), std::string::npos) << result.output;
  }
  // Training asks the service too, and trains on the service's cache.
  const auto train = RunIisan("train" + Args(root_ / "client_cache") + " --set cache.service=" + socket.string() +
                              " --set train.epochs=1 --set name=svc --set run_root=" + (root_ / "runs").string());
  EXPECT_EQ(train.exit_code, 0) << train.output;
  EXPECT_NE(train.output.find("loaded cache \"" + (root_ / "service_cache").string()), std::string::npos) << train.output;
  EXPECT_FALSE(fs::exists(root_ / "client_cache")) << "a client built its own cache";
  const auto status = CallCacheService(socket.string(), {{"op", "status"}});
  EXPECT_EQ(status["builds_run"], 1) << status.dump();
  ::kill(pid, SIGTERM);
  service.stopped = true;
  for (int i = 0; i < 100 && fs::exists(socket); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_FALSE(fs::exists(socket)) << "the service did not stop on SIGTERM";
}

}  // namespace
}  // namespace iisan::cache
