// Chunk files: a header of int64 values (magic, version, first row, rows, K, text dim, image
// dim), the text then image rows as little-endian float32, and the Digest64 of everything
// before it. A file that exists was renamed into place after it was written in full.
#include "cache/partial_build.h"

#include <fcntl.h>
#include <unistd.h>

#include <charconv>
#include <cstring>
#include <fstream>
#include <iomanip>
#include <sstream>

#include <glog/logging.h>
#include <torch/torch.h>

#include "cache/digest.h"
#include "cache/state_file.h"
#include "core/data/atomic_file.h"
#include "core/data/text_file.h"
#include "core/data/json_input.h"

namespace iisan::cache {
namespace {

constexpr int64_t kChunkMagic = 0x4b4843534e415349;  // "ISANSCHK"
constexpr int64_t kChunkVersion = 1;
constexpr int kHeaderWords = 7;

nlohmann::json LayoutJson(const ChunkLayout& layout) {
  return {{"items", layout.items}, {"chunk_items", layout.chunk_items}, {"kept_layers", layout.kept_layers},
          {"text_dim", layout.text_dim}, {"image_dim", layout.image_dim}};
}

// The chunk a file name of ChunkPath's form names, if it is one.
std::optional<int64_t> ChunkIndex(const std::string& name) {
  constexpr std::string_view kPrefix = "chunk-", kSuffix = ".bin";
  if (name.size() <= kPrefix.size() + kSuffix.size() || !name.starts_with(kPrefix) || !name.ends_with(kSuffix)) {
    return std::nullopt;
  }
  int64_t chunk = -1;
  const char* begin = name.data() + kPrefix.size();
  const char* end = name.data() + name.size() - kSuffix.size();
  const auto [stop, error] = std::from_chars(begin, end, chunk);
  if (error != std::errc() || stop != end || chunk < 0) return std::nullopt;
  return chunk;
}

// Durable before it is visible: a chunk file that exists survives a machine crash too.
void WriteFileAtomically(const std::filesystem::path& path, const std::string& bytes) {
  try {
    data::WriteFileAtomically(path, bytes);
  } catch (const data::FileWriteError& error) {
    throw CacheError(std::string(error.what()) + "; is the disk full?");
  }
}

}  // namespace

std::optional<ChunkLayout> ParseChunkLayout(const nlohmann::json& json) {
  if (!json.is_object()) return std::nullopt;
  auto field = [&](const char* name, int64_t min, int64_t max) -> std::optional<int64_t> {
    const auto it = json.find(name);
    if (it == json.end() || !it->is_number_integer()) return std::nullopt;
    if (it->is_number_unsigned() && it->get<uint64_t>() > static_cast<uint64_t>(max)) return std::nullopt;
    const auto value = it->get<int64_t>();
    if (value < min || value > max) return std::nullopt;
    return value;
  };
  const auto items = field("items", 0, kMaxCacheRows - 1);
  const auto chunk_items = field("chunk_items", 1, kMaxCacheRows);
  const auto kept_layers = field("kept_layers", 1, kMaxKeptLayers);
  const auto text_dim = field("text_dim", 0, kMaxStateWidth);
  const auto image_dim = field("image_dim", 0, kMaxStateWidth);
  if (!items || !chunk_items || !kept_layers || !text_dim || !image_dim) return std::nullopt;
  return ChunkLayout{*items, *chunk_items, *kept_layers, *text_dim, *image_dim};
}

std::optional<nlohmann::json> PartialBuild::ReadManifest(const std::filesystem::path& dir) {
  if (!std::filesystem::exists(dir / "manifest.json")) return std::nullopt;
  nlohmann::json manifest;
  try {
    manifest = data::ReadJsonFile<nlohmann::json>(dir / "manifest.json", {size_t{16} << 20, 32});
  } catch (const data::InputError&) {
    return std::nullopt;  // torn or foreign: the build starts over in a fresh partial folder
  }
  if (!manifest.is_object() || !manifest.contains("fingerprint") ||
      !manifest.contains("layout")) {
    return std::nullopt;
  }
  return manifest;
}

PartialBuild PartialBuild::Prepare(const std::filesystem::path& dir, const std::string& fingerprint,
                                   const nlohmann::json& inputs, const ChunkLayout& layout) {
  if (std::filesystem::exists(dir)) {
    const auto manifest = ReadManifest(dir);
    if (manifest && (*manifest)["fingerprint"] == fingerprint && (*manifest)["layout"] == LayoutJson(layout)) {
      return PartialBuild(dir, layout);
    }
    LOG(WARNING) << "discarding the partial cache build " << dir << ": "
                 << (manifest ? "it was started for other inputs (key " + (*manifest)["fingerprint"].dump() +
                                    ") or another chunk size"
                              : std::string("its manifest is missing or unreadable"));
    data::RemoveTree(dir);
  }
  std::filesystem::create_directories(dir);
  const nlohmann::json manifest = {{"fingerprint", fingerprint}, {"layout", LayoutJson(layout)}, {"inputs", inputs}};
  WriteFileAtomically(dir / "manifest.json", manifest.dump(2) + "\n");
  return PartialBuild(dir, layout);
}

PartialBuild PartialBuild::Attach(const std::filesystem::path& dir, const std::string& fingerprint,
                                  const ChunkLayout& layout) {
  const auto manifest = ReadManifest(dir);
  if (!manifest || (*manifest)["fingerprint"] != fingerprint || (*manifest)["layout"] != LayoutJson(layout)) {
    throw CacheError(dir.string() + ": the partial build folder does not hold key " + fingerprint +
                     " with this chunk layout; do all ranks see the same files and config?");
  }
  return PartialBuild(dir, layout);
}

std::filesystem::path PartialBuild::ChunkPath(int64_t chunk) const {
  std::ostringstream name;
  name << "chunk-" << std::setw(6) << std::setfill('0') << chunk << ".bin";
  return dir_ / name.str();
}

int64_t PartialBuild::ChunkBytes(int64_t chunk) const {
  const int64_t floats = layout_.count(chunk) * layout_.kept_layers * (layout_.text_dim + layout_.image_dim);
  return kHeaderWords * 8 + floats * 4 + 8;
}

bool PartialBuild::HasChunk(int64_t chunk) const {
  std::error_code error;
  const auto size = std::filesystem::file_size(ChunkPath(chunk), error);
  return !error && static_cast<int64_t>(size) == ChunkBytes(chunk);
}

int64_t PartialBuild::CountChunks() const {
  int64_t done = 0;
  std::error_code error;
  for (std::filesystem::directory_iterator it(dir_, error), end; !error && it != end; it.increment(error)) {
    const auto name = it->path().filename().string();
    const auto chunk = ChunkIndex(name);
    // "chunk-0000001.bin" is not chunk 1's name: only ChunkPath's spelling counts.
    if (chunk && *chunk < layout_.num_chunks() && ChunkPath(*chunk).filename() == name && HasChunk(*chunk)) ++done;
  }
  return done;
}

void PartialBuild::WriteChunk(int64_t chunk, const torch::Tensor& text, const torch::Tensor& image) const {
  const int64_t header[kHeaderWords] = {kChunkMagic, kChunkVersion, layout_.begin(chunk), layout_.count(chunk),
                                        layout_.kept_layers, layout_.text_dim, layout_.image_dim};
  std::string bytes(reinterpret_cast<const char*>(header), sizeof(header));
  for (const auto& [rows, dim] : {std::pair{text, layout_.text_dim}, std::pair{image, layout_.image_dim}}) {
    if (dim == 0) continue;
    const auto flat = rows.to(torch::kCPU, torch::kFloat32).contiguous();
    if (flat.numel() != layout_.count(chunk) * layout_.kept_layers * dim) {
      throw CacheError(dir_.string() + ": chunk " + std::to_string(chunk) + " has " + std::to_string(flat.numel()) +
                       " values, expected " + std::to_string(layout_.count(chunk) * layout_.kept_layers * dim));
    }
    bytes.append(reinterpret_cast<const char*>(flat.data_ptr<float>()), flat.numel() * sizeof(float));
  }
  const uint64_t digest = Digest64().Update(bytes).value();
  bytes.append(reinterpret_cast<const char*>(&digest), sizeof(digest));
  WriteFileAtomically(ChunkPath(chunk), bytes);
}

std::optional<std::pair<torch::Tensor, torch::Tensor>> PartialBuild::ReadChunk(int64_t chunk) const {
  const auto path = ChunkPath(chunk);
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  auto reject = [&](const std::string& why) -> std::optional<std::pair<torch::Tensor, torch::Tensor>> {
    LOG(WARNING) << path << ": " << why << "; the chunk will be computed again";
    std::error_code ignored;
    std::filesystem::remove(path, ignored);
    return std::nullopt;
  };
  if (!in) return reject("missing");
  if (static_cast<int64_t>(in.tellg()) != ChunkBytes(chunk)) return reject("wrong size (truncated?)");
  // One read of the whole file, not a stream iterator's byte at a time.
  std::string bytes(static_cast<size_t>(ChunkBytes(chunk)), '\0');
  in.seekg(0);
  if (!in.read(bytes.data(), static_cast<std::streamsize>(bytes.size()))) return reject("unreadable");
  uint64_t stored = 0;
  std::memcpy(&stored, bytes.data() + bytes.size() - 8, 8);
  if (Digest64().Update(std::string_view(bytes).substr(0, bytes.size() - 8)).value() != stored) {
    return reject("checksum mismatch (corrupt)");
  }
  int64_t header[kHeaderWords];
  std::memcpy(header, bytes.data(), sizeof(header));
  const int64_t expected[kHeaderWords] = {kChunkMagic, kChunkVersion, layout_.begin(chunk), layout_.count(chunk),
                                          layout_.kept_layers, layout_.text_dim, layout_.image_dim};
  if (std::memcmp(header, expected, sizeof(header)) != 0) return reject("header does not match the build");
  const char* cursor = bytes.data() + sizeof(header);
  auto take = [&](int64_t dim) {
    if (dim == 0) return torch::Tensor();
    auto rows = torch::empty({layout_.count(chunk), layout_.kept_layers, dim}, torch::kFloat32);
    std::memcpy(rows.data_ptr<float>(), cursor, rows.numel() * sizeof(float));
    cursor += rows.numel() * sizeof(float);
    return rows;
  };
  auto text = take(layout_.text_dim);
  auto image = take(layout_.image_dim);
  return std::pair{text, image};
}

}  // namespace iisan::cache
