// XXH3-64 (xxHash, header-only), which hashes many bytes per cycle, unlike the byte-at-a-time
// FNV-1a it replaced: digesting backbone weights, every image and each chunk file should cost
// little more than reading them.
#include "cache/digest.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

#include <cstdio>
#include <fstream>
#include <new>
#include <stdexcept>
#include <vector>

#include "cache/state_file.h"

namespace iisan::cache {

struct Digest64::State {
  State() : xxh(XXH3_createState()) {
    if (!xxh || XXH3_64bits_reset(xxh) != XXH_OK) throw std::bad_alloc();
  }
  ~State() { XXH3_freeState(xxh); }
  State(const State&) = delete;
  State& operator=(const State&) = delete;
  XXH3_state_t* xxh;
};

Digest64::Digest64() : state_(std::make_unique<State>()) {}
Digest64::~Digest64() = default;
Digest64::Digest64(Digest64&&) noexcept = default;
Digest64& Digest64::operator=(Digest64&&) noexcept = default;

Digest64& Digest64::Update(const void* data, size_t size) {
  if (size > 0 && XXH3_64bits_update(state_->xxh, data, size) != XXH_OK) throw std::runtime_error("XXH3 update failed");
  return *this;
}

uint64_t Digest64::value() const { return XXH3_64bits_digest(state_->xxh); }

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

std::string Digest64::Hex() const { return Hex64(value()); }

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
