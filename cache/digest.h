// Digest64: the one 64-bit content digest of the cache (FNV-1a over bytes, fed in pieces), used
// for the cache key, chunk-file checksums and file digests. Not cryptographic: it tells
// different inputs apart, it does not defend against someone forging a collision.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace iisan::cache {

class Digest64 {
 public:
  Digest64& Update(std::string_view bytes);
  Digest64& Update(const void* data, size_t size);
  // Feeds a field and a separator, so that ("ab","c") and ("a","bc") differ.
  Digest64& Field(std::string_view bytes);
  // Feeds a whole file's bytes (streamed). CacheError naming the file if it cannot be read.
  Digest64& File(const std::filesystem::path& path);

  uint64_t value() const { return hash_; }
  std::string Hex() const;

 private:
  uint64_t hash_ = 14695981039346656037ULL;  // FNV-1a 64 offset basis
};

// 16 lower-case hex digits.
std::string Hex64(uint64_t value);

// Whether `text` is a cache key: exactly 16 lower-case hex digits.
bool IsCacheKey(std::string_view text);

}  // namespace iisan::cache
