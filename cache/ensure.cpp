// flock-based single flight. The lock file stays (removing it would race with a waiter that has
// it open); `iisan cache rm` removes it along with the cache.
#include "cache/ensure.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cstring>

#include <glog/logging.h>

#include "cache/cache_dir.h"
#include "cache/state_file.h"
#include "core/data/atomic_file.h"
#include "core/data/text_file.h"

namespace iisan::cache {
namespace {

int OpenLockFile(const std::filesystem::path& path) {
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) throw CacheError(path.string() + ": cannot open the lock file: " + std::strerror(errno));
  return fd;
}

}  // namespace

FileLock::FileLock(const std::filesystem::path& path) : fd_(OpenLockFile(path)) {
  if (::flock(fd_, LOCK_EX | LOCK_NB) == 0) return;
  LOG(INFO) << "another process holds " << path << " (building this cache); waiting for it";
  while (::flock(fd_, LOCK_EX) != 0) {
    if (errno != EINTR) {
      const std::string reason = std::strerror(errno);
      ::close(fd_);
      throw CacheError(path.string() + ": cannot lock: " + reason);
    }
  }
}

std::unique_ptr<FileLock> FileLock::TryLock(const std::filesystem::path& path) {
  std::unique_ptr<FileLock> lock(new FileLock());
  lock->fd_ = OpenLockFile(path);
  if (::flock(lock->fd_, LOCK_EX | LOCK_NB) != 0) return nullptr;
  return lock;
}

FileLock::~FileLock() {
  if (fd_ >= 0) ::close(fd_);  // closing releases the flock
}

std::filesystem::path LockPathFor(const std::filesystem::path& cache_path) {
  auto lock = cache_path;
  lock += ".lock";
  return lock;
}

bool IsValidCache(const std::filesystem::path& path, const std::string& fingerprint,
                  const std::vector<std::string>& items, std::string* problem) {
  auto fail = [&](const std::string& why) {
    if (problem) *problem = why;
    return false;
  };
  if (!std::filesystem::exists(path)) return fail("");
  try {
    const auto header = ReadStateFileHeader(path);
    if (header.fingerprint != fingerprint) {
      return fail(path.string() + ": built from other inputs (key " + header.fingerprint + ", this job needs " +
                  fingerprint + ")");
    }
    if (header.items != items) return fail(path.string() + ": its item list differs from the dataset's");
  } catch (const CacheError& error) {
    return fail(error.what());
  }
  return true;
}

void RemoveLeftoversOfCommittedBuild(const std::filesystem::path& cache_path) {
  const auto partial = PartialBuildDir(cache_path);
  if (!std::filesystem::exists(partial)) return;
  LOG(WARNING) << "removing " << partial << ", left by a build killed after it had committed " << cache_path;
  data::RemoveTree(partial);
  data::RemoveTemporariesOfDeadWriters(StatsPathFor(cache_path));
}

EnsureResult EnsureStateCacheFile(const EnsureRequest& request, const BuildControl& control) {
  EnsureResult result;
  result.path = request.path;
  const auto& items = request.dataset->item_ids;
  std::string problem;
  const auto partial = PartialBuildDir(request.path);
  // A valid cache beside a partial build folder: the build was killed after its commit and
  // before its cleanup, which is finished below, under the lock.
  if (IsValidCache(request.path, request.fingerprint, items, &problem) && !std::filesystem::exists(partial)) {
    return result;
  }
  if (!problem.empty() && !request.content_addressed) {
    throw CacheError(problem + "; this cache.path is not managed by the cache: delete the file to rebuild it, "
                     "or leave cache.path empty to use cache.dir/<key>.h5");
  }
  FileLock lock(LockPathFor(request.path));
  // Someone else may have built it while we waited for the lock.
  if (IsValidCache(request.path, request.fingerprint, items, &problem)) {
    RemoveLeftoversOfCommittedBuild(request.path);
    return result;
  }
  if (!problem.empty()) {
    LOG(WARNING) << problem << "; rebuilding it";
    std::filesystem::remove(request.path);
  }
  result.stats = BuildStateCache(*request.dataset, request.options, request.path, control);
  result.built = true;
  return result;
}

}  // namespace iisan::cache
