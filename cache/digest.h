// Digest64: the one 64-bit content digest of the cache (XXH3-64 over bytes, fed in pieces), used
// for the cache key, chunk-file checksums and file digests. Not cryptographic: it tells
// different inputs apart, it does not defend against someone forging a collision.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

namespace iisan::cache {

class Digest64 {
 public:
  Digest64();
  ~Digest64();
  Digest64(Digest64&&) noexcept;
  Digest64& operator=(Digest64&&) noexcept;
  Digest64& Update(std::string_view bytes);
  Digest64& Update(const void* data, size_t size);
  // Feeds a field and a separator, so that ("ab","c") and ("a","bc") differ.
  Digest64& Field(std::string_view bytes);
  // Feeds a whole file's bytes (streamed). CacheError naming the file if it cannot be read.
  Digest64& File(const std::filesystem::path& path);

  // The digest of everything fed so far (more can be fed after).
  uint64_t value() const;
  std::string Hex() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// 16 lower-case hex digits.
std::string Hex64(uint64_t value);

// Whether `text` is a cache key: exactly 16 lower-case hex digits.
bool IsCacheKey(std::string_view text);

}  // namespace iisan::cache
