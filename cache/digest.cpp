// FNV-1a, 64-bit: simple, dependency-free and fast enough for backbone files of a few hundred
// MiB (read once per job; the safetensors digests are the dominant cost).
#include "cache/digest.h"

#include <cstdio>
#include <fstream>
#include <vector>

#include "cache/state_file.h"

namespace iisan::cache {

Digest64& Digest64::Update(const void* data, size_t size) {
  const auto* bytes = static_cast<const unsigned char*>(data);
  uint64_t hash = hash_;
  for (size_t i = 0; i < size; ++i) {
    hash ^= bytes[i];
    hash *= 1099511628211ULL;
  }
  hash_ = hash;
  return *this;
}

Digest64& Digest64::Update(std::string_view bytes) { return Update(bytes.data(), bytes.size()); }

Digest64& Digest64::Field(std::string_view bytes) {
  Update(bytes);
  return Update("\x1f", 1);
}

Digest64& Digest64::File(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw CacheError(path.string() + ": cannot read");
  std::vector<char> buffer(1 << 20);
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    Update(buffer.data(), static_cast<size_t>(in.gcount()));
  }
  if (in.bad()) throw CacheError(path.string() + ": read error");
  return *this;
}

std::string Digest64::Hex() const { return Hex64(hash_); }

std::string Hex64(uint64_t value) {
  char out[17];
  std::snprintf(out, sizeof(out), "%016llx", static_cast<unsigned long long>(value));
  return out;
}

bool IsCacheKey(std::string_view text) {
  if (text.size() != 16) return false;
  for (char c : text) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace iisan::cache
