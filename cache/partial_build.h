// The folder of a cache build in progress (see builder.h): a manifest that says which key and
// chunk layout it holds, and one checksummed file per finished chunk, each written under a
// temporary name and renamed, so that a chunk file that exists is complete.
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>
#include <torch/types.h>

namespace iisan::cache {

struct ChunkLayout {
  int64_t items = 0;        // rows 1..items
  int64_t chunk_items = 0;  // rows per chunk (the last may hold fewer)
  int64_t kept_layers = 0;
  int64_t text_dim = 0;     // 0: no text
  int64_t image_dim = 0;    // 0: no image

  int64_t num_chunks() const { return (items + chunk_items - 1) / chunk_items; }
  int64_t begin(int64_t chunk) const { return 1 + chunk * chunk_items; }  // first row
  int64_t count(int64_t chunk) const { return std::min(chunk_items, items - chunk * chunk_items); }
  bool operator==(const ChunkLayout&) const = default;
};

// The layout a manifest records, or nullopt when a field is missing, not an integer, or past
// what a cache may hold (state_file.h): a manifest is read back from disk, and a corrupt one
// must not make `iisan cache ls` count 2^62 chunks.
std::optional<ChunkLayout> ParseChunkLayout(const nlohmann::json& json);

class PartialBuild {
 public:
  // Opens `dir` for the build of `fingerprint`: an existing folder of the same key and layout
  // is resumed; one of other inputs is discarded with a warning; otherwise it is created.
  // Only one process (rank 0) may call this; the others Attach after it.
  static PartialBuild Prepare(const std::filesystem::path& dir, const std::string& fingerprint,
                              const nlohmann::json& inputs, const ChunkLayout& layout);
  // Joins a folder that Prepare made. CacheError if it belongs to another key or layout.
  static PartialBuild Attach(const std::filesystem::path& dir, const std::string& fingerprint,
                             const ChunkLayout& layout);

  const ChunkLayout& layout() const { return layout_; }
  const std::filesystem::path& dir() const { return dir_; }

  // Whether chunk's file exists with the expected size (its checksum is checked by ReadChunk).
  bool HasChunk(int64_t chunk) const;
  // The chunks that HasChunk, found by listing the folder.
  int64_t CountChunks() const;
  // Rows of the chunk: text and image [count, K, D] float32 (undefined where the dim is 0).
  void WriteChunk(int64_t chunk, const torch::Tensor& text, const torch::Tensor& image) const;
  // nullopt (and the file removed) if it is missing, truncated or fails its checksum.
  std::optional<std::pair<torch::Tensor, torch::Tensor>> ReadChunk(int64_t chunk) const;

  static std::optional<nlohmann::json> ReadManifest(const std::filesystem::path& dir);

 private:
  PartialBuild(std::filesystem::path dir, ChunkLayout layout) : dir_(std::move(dir)), layout_(layout) {}
  std::filesystem::path ChunkPath(int64_t chunk) const;
  int64_t ChunkBytes(int64_t chunk) const;

  std::filesystem::path dir_;
  ChunkLayout layout_;
};

}  // namespace iisan::cache
