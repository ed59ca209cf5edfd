// A folder of caches (cache.dir): what it holds and removing one. Caches are named
// <key>.h5; a build in progress is <key>.h5.partial/; <key>.h5.lock is the build lock and
// <key>.stats.json the last build's timing.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace iisan::cache {

// One JSON object per cache file or partial build, sorted by path: path, key, items, bytes,
// status ("complete", "partial" with chunks_done/chunks_total, or "broken" with the error).
nlohmann::json ListCaches(const std::filesystem::path& dir);

// Removes the cache `key_or_path` names (a key in `dir`, or a path) with its partial build,
// lock and stats files. Returns what was removed; CacheError if nothing exists or a build of it
// holds the lock.
std::vector<std::filesystem::path> RemoveCache(const std::filesystem::path& dir, const std::string& key_or_path);

// Refuses (CacheError naming `what`, e.g. "key 0123456789abcdef" or "cache.path", and `dir`) a
// `path` that, once ".." and symbolic links are resolved, is not inside `dir`. A relative path
// is taken relative to `dir`.
void RequireInsideCacheDir(const std::filesystem::path& dir, const std::filesystem::path& path,
                           const std::string& what);

// "<dir>/<key>.stats.json" for "<dir>/<key>.h5".
std::filesystem::path StatsPathFor(const std::filesystem::path& cache_path);

}  // namespace iisan::cache
