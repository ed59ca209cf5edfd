// `iisan cache build` killed with SIGKILL at seeded random moments, as the atomic writer's and
// the checkpoint's kill tests do: while it starts, while chunks are computed and written, and
// while the finished chunks are assembled into the HDF5 file and committed. After every kill, either no cache exists
// or the one in place is complete and equal to an uninterrupted build's; every chunk file that
// passes its checksum holds exactly the rows it should. The build then run to its end resumes
// from the chunks that survived (computing only the others) and ends bitwise equal to the
// uninterrupted build, with no partial folder or temporary left.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <optional>
#include <random>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "cache/builder.h"
#include "cache/digest.h"
#include "cache/partial_build.h"
#include "cache/state_file.h"
#include "cache_test_data.h"

namespace iisan::cache {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// Splits a command line of words without quotes (TinyConfigArgs' paths have no spaces).
std::vector<std::string> Words(const std::string& line) {
  std::istringstream in(line);
  std::vector<std::string> words;
  for (std::string word; in >> word;) words.push_back(word);
  return words;
}

std::string ReadText(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

class CacheKillTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = testing::FreshDir("kill");
    testing::WriteTinyProblem(root_);
  }

  std::string Args(const fs::path& cache_dir) const { return testing::TinyConfigArgs(root_, cache_dir); }

  // Starts `iisan cache build` into cache_dir, its output going to `log`.
  pid_t StartBuild(const fs::path& cache_dir, const fs::path& log, const std::string& extra = "") const {
    std::vector<std::string> words = Words(std::string(IISAN_BINARY) + " cache build" + Args(cache_dir) + extra);
    const pid_t child = ::fork();
    if (child == 0) {
      const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      std::vector<char*> argv;
      for (auto& word : words) argv.push_back(word.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    return child;
  }

  // Whether the build `child` of `key` into cache_dir is assembling its HDF5 file: its
  // temporary, "<key>.h5.tmp.<pid>.<n>", exists (those of killed builds may be there too).
  static bool Assembling(const fs::path& cache_dir, const std::string& key, pid_t child) {
    const std::string prefix = key + ".h5.tmp." + std::to_string(child) + ".";
    std::error_code error;
    for (const auto& entry : fs::directory_iterator(cache_dir, error)) {
      if (entry.path().filename().string().rfind(prefix, 0) == 0) return true;
    }
    return false;
  }

  // The pace of a build on this machine, in this build of iisan: how long one chunk takes, and
  // how long the end takes (assembling the HDF5 file from the chunks, committing, exiting).
  struct Pace {
    std::chrono::microseconds chunk{1};
    std::chrono::microseconds end{1};
  };

  // Runs an uninterrupted build of `chunks` chunks into cache_dir and times it by watching its
  // partial folder (polled every 100 µs; each time at least 1 µs).
  Pace MeasurePace(const fs::path& cache_dir, const std::string& key, int64_t chunks) const {
    const auto log = root_ / "paced.log";
    const pid_t child = StartBuild(cache_dir, log);
    EXPECT_GT(child, 0);
    const auto partial = PartialBuildDir(cache_dir / (key + ".h5"));
    std::optional<Clock::time_point> first_chunk, all_chunks, assembling;
    int status = 0;
    while (::waitpid(child, &status, WNOHANG) != child) {
      const int64_t done = InspectPartialBuild(partial).chunks_done;
      const auto now = Clock::now();
      if (!first_chunk && done > 0) first_chunk = now;
      if (!all_chunks && done == chunks) all_chunks = now;
      if (!assembling && Assembling(cache_dir, key, child)) assembling = now;
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    const auto ended = Clock::now();
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << ReadText(log);
    const auto micros = [](Clock::duration d) {
      return std::max(std::chrono::microseconds(1), std::chrono::duration_cast<std::chrono::microseconds>(d));
    };
    Pace pace;
    if (first_chunk && all_chunks) pace.chunk = micros((*all_chunks - *first_chunk) / (chunks - 1));
    if (assembling || all_chunks) pace.end = micros(ended - (assembling ? *assembling : *all_chunks));
    return pace;
  }

  // The rows a chunk file must hold, from the uninterrupted build.
  std::pair<torch::Tensor, torch::Tensor> ExpectedRows(const ChunkLayout& layout, int64_t chunk) const {
    return {reference_.text.narrow(0, layout.begin(chunk), layout.count(chunk)),
            reference_.image.narrow(0, layout.begin(chunk), layout.count(chunk))};
  }

  // After a kill: the committed cache, if any, is whole and right; every chunk that passes its
  // checksum holds its rows (one that does not is removed, as a build would). Returns the number
  // of good chunks, which a resumed build must not compute again.
  int64_t CheckWhatTheKillLeft(const std::string& round) {
    SCOPED_TRACE(round);
    if (fs::exists(cache_)) {
      const StateFile file = ReadStateFile(cache_);
      EXPECT_EQ(file.fingerprint, reference_.fingerprint);
      EXPECT_EQ(file.items, reference_.items);
      EXPECT_TRUE(torch::equal(file.text, reference_.text)) << "a committed cache differs from the uninterrupted one";
      EXPECT_TRUE(torch::equal(file.image, reference_.image)) << "a committed cache differs from the uninterrupted one";
    }
    const auto partial = PartialBuildDir(cache_);
    const auto manifest = PartialBuild::ReadManifest(partial);
    if (!manifest) return 0;
    const auto layout = ParseChunkLayout((*manifest)["layout"]);
    if (!layout) {
      ADD_FAILURE() << "the build wrote a manifest without a readable layout";
      return 0;
    }
    const auto build = PartialBuild::Attach(partial, (*manifest)["fingerprint"].get<std::string>(), *layout);
    int64_t good = 0;
    for (int64_t chunk = 0; chunk < layout->num_chunks(); ++chunk) {
      if (!build.HasChunk(chunk)) continue;
      const auto rows = build.ReadChunk(chunk);
      if (!rows) continue;
      const auto [text, image] = ExpectedRows(*layout, chunk);
      EXPECT_TRUE(torch::equal(rows->first, text) && torch::equal(rows->second, image)) << "chunk " << chunk;
      ++good;
    }
    return good;
  }

  fs::path root_, cache_;
  StateFile reference_;
};

TEST_F(CacheKillTest, KillNineAtRandomMomentsThenAResumedBuildEqualsAnUninterruptedOne) {
  // The uninterrupted build, and its duration, over which the kills are spread.
  const auto started = Clock::now();
  const auto whole = testing::RunIisan("cache build" + Args(root_ / "whole"));
  const auto duration = Clock::now() - started;
  ASSERT_EQ(whole.exit_code, 0) << whole.output;
  const auto key = whole.output.substr(whole.output.find("(key ") + 5, 16);
  ASSERT_TRUE(IsCacheKey(key)) << whole.output;
  reference_ = ReadStateFile(root_ / "whole" / (key + ".h5"));
  cache_ = root_ / "cache" / (key + ".h5");
  const auto partial = PartialBuildDir(cache_);
  const int64_t chunks = (48 + 7) / 8;  // WriteTinyProblem's items, TinyConfigArgs' chunk size

  // Later rounds kill within one chunk's time of the chunks they wait for, or within the time
  // the end takes once all chunks exist, as measured on another uninterrupted build. (A fixed
  // delay of up to 30 ms let the unsanitized build finish before most kills.)
  const Pace pace = MeasurePace(root_ / "paced", key, chunks);
  ASSERT_FALSE(HasFailure());

  std::mt19937 random(20261202);
  const auto micros = std::chrono::duration_cast<std::chrono::microseconds>(duration).count();
  std::uniform_int_distribution<int64_t> anytime(0, micros);
  std::uniform_int_distribution<int64_t> within_a_chunk(0, pace.chunk.count());
  std::uniform_int_distribution<int64_t> within_the_end(0, pace.end.count());
  int64_t good = 0;
  int kills = 0;
  for (int round = 1; round <= 12 && !fs::exists(cache_); ++round) {
    const std::string name = "round " + std::to_string(round);
    const auto log = root_ / ("build-" + std::to_string(round) + ".log");
    const pid_t child = StartBuild(root_ / "cache", log);
    ASSERT_GT(child, 0);
    int status = 0;
    bool reaped = false;
    const auto ended = [&] { return reaped || (reaped = ::waitpid(child, &status, WNOHANG) == child); };
    // The first round: any moment of a build's span (starting up, loading the backbones, ...).
    // Later rounds: once one or two chunks more than survived exist, up to a chunk's time later;
    // once all exist and the HDF5 file is being assembled, at any moment of the end (assembling,
    // committing, exiting).
    if (round == 1) {
      std::this_thread::sleep_for(std::chrono::microseconds(anytime(random)));
    } else {
      const int64_t wanted = std::min(chunks, good + 1 + static_cast<int64_t>(random() % 2));
      const auto deadline = Clock::now() + std::chrono::seconds(120);
      const auto reached = [&] {
        return InspectPartialBuild(partial).chunks_done >= wanted &&
               (wanted < chunks || Assembling(root_ / "cache", key, child));
      };
      while (!reached() && !fs::exists(cache_) && !ended() && Clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::microseconds(100));
      }
      std::this_thread::sleep_for(
          std::chrono::microseconds(wanted < chunks ? within_a_chunk(random) : within_the_end(random)));
    }
    if (!ended()) {
      ::kill(child, SIGKILL);
      ASSERT_EQ(::waitpid(child, &status, 0), child);
    }
    if (WIFSIGNALED(status)) {
      ++kills;
    } else {
      ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << name << ": " << ReadText(log);
    }
    good = CheckWhatTheKillLeft(name);
    if (HasFailure()) {
      ADD_FAILURE() << name << "'s output:\n" << ReadText(log);
      return;
    }
  }
  EXPECT_GE(kills, 3) << "most builds should have been killed before they finished";

  // The build run to its end: it resumes from the good chunks.
  const auto stats_path = root_ / "resumed.json";
  const bool committed = fs::exists(cache_);
  const auto resumed = testing::RunIisan("cache build" + Args(root_ / "cache") + " --stats-out " + stats_path.string());
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  if (committed) {
    EXPECT_NE(resumed.output.find("cache up to date"), std::string::npos) << resumed.output;
  } else {
    std::ifstream in(stats_path);
    const auto stats = nlohmann::json::parse(in);
    EXPECT_EQ(stats["chunks_already_done"].get<int64_t>(), good) << resumed.output;
    EXPECT_EQ(stats["chunks_computed"].get<int64_t>(), chunks - good) << "chunks that survived were computed again";
  }
  const StateFile file = ReadStateFile(cache_);
  EXPECT_EQ(file.fingerprint, reference_.fingerprint);
  EXPECT_EQ(file.items, reference_.items);
  EXPECT_TRUE(torch::equal(file.text, reference_.text));
  EXPECT_TRUE(torch::equal(file.image, reference_.image));
  EXPECT_FALSE(fs::exists(partial)) << "the partial build folder outlived the finished build";
  for (const auto& entry : fs::directory_iterator(root_ / "cache")) {
    EXPECT_NE(entry.path().filename().string().rfind(key + ".h5.tmp.", 0), 0u) << entry.path() << " was left behind";
  }
}

}  // namespace
}  // namespace iisan::cache
