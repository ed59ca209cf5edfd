// The atomic writer: whole replacement, no temporary left behind, failures that name the path
// and the system's reason with the target untouched, concurrent writers, and kill -9 at random
// moments leaving one complete version; the durable append of logs.
#include "core/data/atomic_file.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <iostream>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tests/core/data/test_files.h"

namespace iisan::data {
namespace {

using testing::TempDir;
namespace fs = std::filesystem;

std::string Read(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::vector<std::string> Temporaries(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const auto name = entry.path().filename().string();
    if (name.find(".tmp.") != std::string::npos) names.push_back(name);
  }
  return names;
}

uint64_t Fnv1a(const char* data, size_t size) {
  uint64_t hash = 1469598103934665603ULL;
  for (size_t i = 0; i < size; ++i) hash = (hash ^ static_cast<unsigned char>(data[i])) * 1099511628211ULL;
  return hash;
}

// A self-checking version: [total length][FNV-1a of the payload][version id], then the payload.
// Even versions are large (2 MiB), odd ones small, so a torn mix of two would show.
constexpr size_t kHeader = 3 * sizeof(uint64_t);

std::string MakeVersion(uint64_t version) {
  const size_t payload = (version % 2 == 0) ? (2u << 20) : (48u << 10) + version % 1000;
  std::string bytes(kHeader + payload, '\0');
  uint64_t state = version * 0x9E3779B97F4A7C15ULL + 1;
  for (size_t i = kHeader; i < bytes.size(); ++i) {
    state ^= state << 13, state ^= state >> 7, state ^= state << 17;
    bytes[i] = static_cast<char>(state);
  }
  const uint64_t header[3] = {bytes.size(), Fnv1a(bytes.data() + kHeader, payload), version};
  std::memcpy(bytes.data(), header, kHeader);
  return bytes;
}

// The version id of a whole file, or -1 (with the reason) for a torn, truncated or missing one.
int64_t CheckedVersion(const fs::path& path, std::string* problem) {
  if (!fs::exists(path)) return *problem = "missing", -1;
  const std::string bytes = Read(path);
  if (bytes.size() < kHeader) return *problem = "only " + std::to_string(bytes.size()) + " bytes", -1;
  uint64_t header[3];
  std::memcpy(header, bytes.data(), kHeader);
  if (header[0] != bytes.size()) {
    return *problem = "header says " + std::to_string(header[0]) + " bytes, file has " + std::to_string(bytes.size()), -1;
  }
  if (header[1] != Fnv1a(bytes.data() + kHeader, bytes.size() - kHeader)) return *problem = "checksum mismatch", -1;
  if (bytes != MakeVersion(header[2])) return *problem = "not version " + std::to_string(header[2]), -1;
  return static_cast<int64_t>(header[2]);
}

TEST(AtomicFileTest, ReplacesTheContentWholeAndLeavesNoTemporary) {
  TempDir dir;
  const auto path = dir.path() / "a.bin";
  WriteFileAtomically(path, std::string(100000, 'x'));
  EXPECT_EQ(Read(path), std::string(100000, 'x'));
  WriteFileAtomically(path, "short");
  EXPECT_EQ(Read(path), "short");  // no tail of the longer old version
  WriteFileAtomically(path, "");
  EXPECT_TRUE(fs::exists(path));
  EXPECT_EQ(fs::file_size(path), 0u);
  EXPECT_EQ(Temporaries(dir.path()), std::vector<std::string>{});
  EXPECT_EQ((fs::status(path).permissions() & fs::perms::owner_read), fs::perms::owner_read);
}

TEST(AtomicFileTest, TemporaryNamesAreUnique) {
  const fs::path target = "/x/y.json";
  const auto a = TemporaryPathFor(target), b = TemporaryPathFor(target);
  EXPECT_NE(a, b);
  EXPECT_EQ(a.parent_path(), target.parent_path());
  EXPECT_EQ(a.filename().string().rfind("y.json.tmp." + std::to_string(::getpid()) + ".", 0), 0u) << a;
}

TEST(AtomicFileTest, ATargetThatIsAFolderFailsNamingItAndIsUntouched) {
  TempDir dir;
  const auto target = dir.path() / "target";
  fs::create_directories(target);
  testing::WriteFile(target / "inside", "kept");
  try {
    WriteFileAtomically(target, "new contents");
    FAIL() << "writing over a folder succeeded";
  } catch (const FileWriteError& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find(target.string()), std::string::npos) << message;
    EXPECT_NE(message.find(std::strerror(EISDIR)), std::string::npos) << message;
    EXPECT_EQ(error.error_number(), EISDIR);
  }
  EXPECT_TRUE(fs::is_directory(target));
  EXPECT_EQ(Read(target / "inside"), "kept");
  EXPECT_EQ(Temporaries(dir.path()), std::vector<std::string>{});
}

TEST(AtomicFileTest, AMissingFolderFailsNamingThePathAndReason) {
  TempDir dir;
  const auto target = dir.path() / "no_such_folder" / "a.json";
  try {
    WriteFileAtomically(target, "{}");
    FAIL() << "writing into a missing folder succeeded";
  } catch (const FileWriteError& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find((dir.path() / "no_such_folder").string()), std::string::npos) << message;
    EXPECT_NE(message.find("No such file or directory"), std::string::npos) << message;
  }
  EXPECT_FALSE(fs::exists(dir.path() / "no_such_folder"));
}

TEST(AtomicFileTest, AReadOnlyFolderFailsAndTheTargetIsUntouched) {
  if (::geteuid() == 0) GTEST_SKIP() << "root writes into read-only folders";
  TempDir dir;
  const auto folder = dir.path() / "ro";
  fs::create_directories(folder);
  testing::WriteFile(folder / "a.txt", "old");
  fs::permissions(folder, fs::perms::owner_read | fs::perms::owner_exec);
  EXPECT_THROW(WriteFileAtomically(folder / "a.txt", "new"), FileWriteError);
  fs::permissions(folder, fs::perms::owner_all);
  EXPECT_EQ(Read(folder / "a.txt"), "old");
  EXPECT_EQ(Temporaries(folder), std::vector<std::string>{});
}

// A write that fails half-way (the file size limit stands in for a full disk): the error names
// the temporary and the reason, the temporary is gone and the old target stays. In a child
// process, so that the limit does not outlive the test.
TEST(AtomicFileTest, AFailedWriteRemovesTheTemporaryAndKeepsTheOldFile) {
  TempDir dir;
  const auto path = dir.path() / "state.bin";
  WriteFileAtomically(path, "old version");
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::signal(SIGXFSZ, SIG_IGN);
    const rlimit limit{4096, 4096};
    if (::setrlimit(RLIMIT_FSIZE, &limit) != 0) ::_exit(10);
    try {
      WriteFileAtomically(path, std::string(1 << 20, 'n'));
      ::_exit(11);  // the write should not have succeeded
    } catch (const FileWriteError& error) {
      const std::string message = error.what();
      if (message.find(path.string() + ".tmp.") == std::string::npos) ::_exit(12);
      if (message.find(std::strerror(EFBIG)) == std::string::npos) ::_exit(13);
      ::_exit(0);
    } catch (...) {
      ::_exit(14);
    }
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "10: setrlimit, 11: no error, 12: path not named, 13: reason not named";
  EXPECT_EQ(Read(path), "old version");
  EXPECT_EQ(Temporaries(dir.path()), std::vector<std::string>{});
}

TEST(AtomicFileTest, AnUncommittedFileIsRemovedAndTheTargetKept) {
  TempDir dir;
  const auto path = dir.path() / "model.safetensors";
  WriteFileAtomically(path, "old");
  fs::path temp;
  {
    AtomicFile file(path);
    temp = file.temp_path();
    file.Write("half", 4);
    EXPECT_TRUE(fs::exists(temp));
    EXPECT_EQ(Read(path), "old");
  }  // destroyed without Commit, as when an exception passes
  EXPECT_FALSE(fs::exists(temp));
  EXPECT_EQ(Read(path), "old");
  EXPECT_EQ(Temporaries(dir.path()), std::vector<std::string>{});
}

TEST(AtomicFileTest, AFileWrittenByAnotherWriterIsCommitted) {
  TempDir dir;
  const auto path = dir.path() / "cache.h5";
  AtomicFile file(path);
  {
    std::ofstream out(file.temp_path(), std::ios::binary);  // as the HDF5 library would
    out << "written elsewhere";
  }
  EXPECT_FALSE(fs::exists(path));
  file.Commit();
  EXPECT_EQ(Read(path), "written elsewhere");
  EXPECT_FALSE(fs::exists(file.temp_path()));
  EXPECT_THROW(file.Commit(), FileWriteError);
  EXPECT_EQ(Read(path), "written elsewhere");
}

TEST(AtomicFileTest, CommitWithoutAFileFailsAndKeepsTheTarget) {
  TempDir dir;
  const auto path = dir.path() / "a";
  WriteFileAtomically(path, "old");
  AtomicFile file(path);  // nobody wrote the temporary
  try {
    file.Commit();
    FAIL() << "committed a file that was never written";
  } catch (const FileWriteError& error) {
    EXPECT_NE(std::string(error.what()).find("No such file or directory"), std::string::npos) << error.what();
  }
  EXPECT_EQ(Read(path), "old");
}

TEST(AtomicFileTest, ConcurrentWritersLeaveOneWholeVersion) {
  TempDir dir;
  const auto path = dir.path() / "shared.bin";
  constexpr int kThreads = 6, kWrites = 8;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kWrites; ++i) {
        try {
          WriteFileAtomically(path, MakeVersion(static_cast<uint64_t>(t * 100 + i)));
        } catch (...) {
          ++failures;
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  std::string problem;
  const int64_t version = CheckedVersion(path, &problem);
  EXPECT_GE(version, 0) << problem;
  EXPECT_EQ(version % 100, kWrites - 1) << "the last file in place is some thread's last write";
  EXPECT_EQ(Temporaries(dir.path()), std::vector<std::string>{});
}

TEST(AtomicFileTest, AppendDurablyCreatesThenAppendsAndNamesThePathOnFailure) {
  TempDir dir;
  const auto path = dir.path() / "metrics.jsonl";
  AppendDurably(path, "{\"epoch\": 1}\n");
  AppendDurably(path, "{\"epoch\": 2}\n");
  AppendDurably(path, "");
  EXPECT_EQ(Read(path), "{\"epoch\": 1}\n{\"epoch\": 2}\n");
  EXPECT_EQ(Temporaries(dir.path()), std::vector<std::string>{});
  try {
    AppendDurably(dir.path(), "x\n");
    FAIL() << "appended to a folder";
  } catch (const FileWriteError& error) {
    EXPECT_NE(std::string(error.what()).find(dir.path().string()), std::string::npos) << error.what();
    EXPECT_EQ(error.error_number(), EISDIR);
  }
  EXPECT_THROW(AppendDurably(dir.path() / "missing" / "metrics.jsonl", "x\n"), FileWriteError);
}

TEST(AtomicFileTest, SyncDirectoryFailsForAMissingFolder) {
  TempDir dir;
  EXPECT_NO_THROW(SyncDirectory(dir.path()));
  EXPECT_NO_THROW(SyncFilesystemOf(dir.path()));
  EXPECT_THROW(SyncDirectory(dir.path() / "missing"), FileWriteError);
}

TEST(AtomicFileTest, TemporariesOfDeadWritersAreRemovedAndLiveOnesKept) {
  TempDir dir;
  const auto path = dir.path() / "c.h5";
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ASSERT_GT(child, 0);
  ::waitpid(child, nullptr, 0);
  const auto make = [&](const std::string& suffix) {
    auto temp = path;
    temp += suffix;
    testing::WriteFile(temp, "half");
    return temp;
  };
  const auto dead_old_style = make(".tmp." + std::to_string(child));
  const auto dead = make(".tmp." + std::to_string(child) + ".3");
  const auto live = make(".tmp." + std::to_string(::getpid()) + ".0");
  const auto other = make(".tmp.notapid");
  const auto other_file = dir.path() / ("d.h5.tmp." + std::to_string(child));
  testing::WriteFile(other_file, "not ours");
  EXPECT_EQ(RemoveTemporariesOfDeadWriters(path), 2);
  EXPECT_FALSE(fs::exists(dead_old_style));
  EXPECT_FALSE(fs::exists(dead));
  EXPECT_TRUE(fs::exists(live));
  EXPECT_TRUE(fs::exists(other));
  EXPECT_TRUE(fs::exists(other_file));
}

// A child rewrites the file in a loop (large and small versions alternating) and is killed with
// SIGKILL at seeded random moments; after every kill the file must be one complete version.
TEST(AtomicFileTest, KillNineAtRandomMomentsLeavesOneCompleteVersion) {
  TempDir dir;
  const auto path = dir.path() / "state.bin";
  WriteFileAtomically(path, MakeVersion(0));
  std::mt19937 random(20240613);
  std::uniform_int_distribution<int> delay_us(0, 60000);
  constexpr int kKills = 10;
  int kills_mid_write = 0;
  for (int round = 1; round <= kKills; ++round) {
    const uint64_t first = round * 1000000ULL;
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      for (uint64_t version = first;; ++version) {
        try {
          WriteFileAtomically(path, MakeVersion(version));
        } catch (...) {
          ::_exit(3);
        }
      }
    }
    // Kills the writer however this round ends (an ASSERT returns early).
    struct Reaper {
      pid_t pid;
      ~Reaper() {
        if (pid > 0 && ::kill(pid, SIGKILL) == 0) ::waitpid(pid, nullptr, 0);
      }
    } reaper{child};
    // Wait for the child's first version (so that every round kills a writer that replaces a file
    // it wrote itself), then let it run for a random while longer.
    std::string problem;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    int64_t seen = -1;
    while ((seen = CheckedVersion(path, &problem)) < static_cast<int64_t>(first) &&
           std::chrono::steady_clock::now() < deadline) {
      ASSERT_NE(seen, -1) << "round " << round << ", while the writer runs: " << problem;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(delay_us(random)));
    ASSERT_EQ(::kill(child, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    reaper.pid = 0;
    ASSERT_TRUE(WIFSIGNALED(status)) << "the writer exited by itself (status " << status << "): a write failed";
    ASSERT_GE(seen, static_cast<int64_t>(first)) << "round " << round << ": the writer wrote nothing in 20 s";
    const int64_t version = CheckedVersion(path, &problem);
    ASSERT_GE(version, seen) << "after kill " << round << ": the file is not one whole version: " << problem;
    if (RemoveTemporariesOfDeadWriters(path) > 0) ++kills_mid_write;
  }
  std::cout << "[ info ] " << kills_mid_write << " of " << kKills << " kills left a temporary (killed mid-write)\n";
  EXPECT_EQ(Temporaries(dir.path()), std::vector<std::string>{});
}

}  // namespace
}  // namespace iisan::data
