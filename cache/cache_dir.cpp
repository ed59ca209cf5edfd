#include "cache/cache_dir.h"

#include <algorithm>

#include "cache/builder.h"
#include "cache/digest.h"
#include "cache/ensure.h"
#include "cache/state_file.h"
#include "core/data/text_file.h"

namespace iisan::cache {
namespace {

bool EndsWith(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

std::filesystem::path StatsPathFor(const std::filesystem::path& cache_path) {
  auto stats = cache_path;
  stats.replace_extension(".stats.json");
  return stats;
}

void RequireInsideCacheDir(const std::filesystem::path& dir, const std::filesystem::path& path,
                           const std::string& what) {
  namespace fs = std::filesystem;
  std::error_code error;
  const auto root = fs::weakly_canonical(fs::absolute(dir), error);
  fs::path resolved;
  if (!error) resolved = fs::weakly_canonical(fs::absolute(path.is_absolute() ? path : dir / path), error);
  const auto relative = resolved.lexically_relative(root);
  if (error || relative.empty() || relative == "." || *relative.begin() == "..") {
    throw CacheError(what + ": " + path.string() + " is not inside the cache folder " + dir.string() +
                     " (once '..' and symbolic links are resolved); only caches of that folder are served");
  }
}

nlohmann::json ListCaches(const std::filesystem::path& dir) {
  nlohmann::json out = nlohmann::json::array();
  if (!std::filesystem::is_directory(dir)) return out;
  std::vector<std::filesystem::path> paths;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) paths.push_back(entry.path());
  std::sort(paths.begin(), paths.end());
  for (const auto& path : paths) {
    const std::string name = path.filename().string();
    if (EndsWith(name, ".h5") && std::filesystem::is_regular_file(path)) {
      nlohmann::json row = {{"path", path.string()}, {"bytes", std::filesystem::file_size(path)}};
      try {
        RequireInsideCacheDir(dir, path, name);  // a link out of the folder is not read
        const auto header = ReadStateFileHeader(path);
        row["key"] = header.fingerprint;
        row["items"] = static_cast<int64_t>(header.items.size()) - 1;
        row["status"] = "complete";
      } catch (const CacheError& error) {
        row["key"] = "";
        row["status"] = "broken";
        row["error"] = error.what();
      }
      out.push_back(row);
    } else if (EndsWith(name, ".h5.partial") && std::filesystem::is_directory(path)) {
      const auto info = InspectPartialBuild(path);
      uintmax_t bytes = 0;
      for (const auto& file : std::filesystem::directory_iterator(path)) {
        if (file.is_regular_file()) bytes += file.file_size();
      }
      out.push_back({{"path", path.string()}, {"bytes", bytes}, {"key", info.fingerprint}, {"items", info.items},
                     {"status", "partial"}, {"chunks_done", info.chunks_done}, {"chunks_total", info.chunks_total}});
    }
  }
  return out;
}

std::vector<std::filesystem::path> RemoveCache(const std::filesystem::path& dir, const std::string& key_or_path) {
  // Only what this program made: <key>.h5 (with its partial build, stats and lock) directly in
  // cache.dir. Any other path, however it is spelled, is refused before anything is touched.
  std::filesystem::path path;
  if (IsCacheKey(key_or_path)) {
    path = dir / (key_or_path + ".h5");
  } else {
    const std::filesystem::path given(key_or_path);
    const auto name = given.filename().string();
    const bool key_named = name.size() > 3 && name.substr(name.size() - 3) == ".h5" &&
                           IsCacheKey(name.substr(0, name.size() - 3));
    std::error_code error;
    const auto parent = std::filesystem::weakly_canonical(std::filesystem::absolute(given).parent_path(), error);
    const auto cache_dir = std::filesystem::weakly_canonical(std::filesystem::absolute(dir), error);
    if (!key_named || error || parent != cache_dir) {
      throw CacheError("cache rm " + key_or_path + ": not a cache of cache.dir (" + dir.string() + "); give a key "
                       "as `iisan cache ls` lists it, or <key>.h5 in cache.dir. Nothing was removed");
    }
    path = dir / name;
  }
  if (std::filesystem::exists(path) && !std::filesystem::is_regular_file(std::filesystem::symlink_status(path))) {
    throw CacheError(path.string() + ": not a regular file, so not a cache this program wrote; nothing was removed");
  }
  const auto partial = PartialBuildDir(path);
  if (!std::filesystem::exists(path) && !std::filesystem::exists(partial)) {
    throw CacheError(path.string() + ": no such cache (nor a partial build of it); `iisan cache ls` lists them");
  }
  const auto lock_path = LockPathFor(path);
  std::unique_ptr<FileLock> lock;
  if (std::filesystem::exists(lock_path)) {
    lock = FileLock::TryLock(lock_path);
    if (!lock) throw CacheError(path.string() + ": a build of this cache is running (it holds " + lock_path.string() + "); try again when it is done");
  }
  std::vector<std::filesystem::path> removed;
  for (const auto& victim : {path, partial, StatsPathFor(path)}) {
    if (std::filesystem::exists(victim)) {
      data::RemoveTree(victim);
      removed.push_back(victim);
    }
  }
  if (lock) {
    std::filesystem::remove(lock_path);
    removed.push_back(lock_path);
  }
  return removed;
}

}  // namespace iisan::cache
