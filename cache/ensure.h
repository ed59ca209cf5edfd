// Making sure a valid cache exists at a path, built at most once however many processes ask at
// the same time: the first takes an exclusive lock on "<cache>.lock" (flock) and builds, the
// others block on the lock and then find the finished file. A file that exists but is broken
// (truncated, another key, another item list) is rebuilt when the path is content-addressed
// (cache.dir/<key>.h5, owned by the cache) and refused otherwise.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "cache/builder.h"

namespace iisan::cache {

// An exclusive flock held for the object's lifetime; released by the kernel if the process dies.
class FileLock {
 public:
  // Blocks until the lock is ours; logs once if another process holds it.
  explicit FileLock(const std::filesystem::path& path);
  // Non-blocking: whether the lock could be taken (then it is held until destruction).
  static std::unique_ptr<FileLock> TryLock(const std::filesystem::path& path);
  ~FileLock();
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  FileLock() = default;
  int fd_ = -1;
};

std::filesystem::path LockPathFor(const std::filesystem::path& cache_path);

// Whether the file at `path` is a complete cache of `fingerprint` over `items`; `problem` says
// what is wrong otherwise ("" when the file does not exist).
bool IsValidCache(const std::filesystem::path& path, const std::string& fingerprint,
                  const std::vector<std::string>& items, std::string* problem = nullptr);

// With the cache's lock held and the cache valid: removes what a build killed between its commit
// and its cleanup left (the partial build folder, a half-written stats file).
void RemoveLeftoversOfCommittedBuild(const std::filesystem::path& cache_path);

struct EnsureResult {
  std::filesystem::path path;
  bool built = false;  // this call ran the builder
  BuildStats stats;    // when built
};

struct EnsureRequest {
  const data::Dataset* dataset = nullptr;
  CacheBuildOptions options;
  std::filesystem::path path;
  std::string fingerprint;
  bool content_addressed = true;  // the path is cache.dir/<key>.h5: a broken file there is rebuilt
};

EnsureResult EnsureStateCacheFile(const EnsureRequest& request, const BuildControl& control = {});

}  // namespace iisan::cache
