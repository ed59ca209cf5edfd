// The HDF5 file of cached frozen-backbone states (DESIGN.md, formats):
//   /text/hidden, /image/hidden  [N_items+1, K, D] in the cache's dtype (row 0 = padding, all
//                                zeros): float32, or bfloat16 as a 16-bit HDF5 float type (sign,
//                                8 exponent and 7 mantissa bits: the upper half of a float32)
//   /items                       item ids in row order (row 0 = ""), fixed-length strings
//   attributes on /: format_version, fingerprint, inputs (JSON of everything that made it)
// Written under a temporary name and renamed only when complete, so a reader never sees a
// partial cache.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "core/data/atomic_file.h"

namespace iisan::cache {

// 3: the tables in the cache's dtype (a bfloat16 cache is half the size of a float32 one and
// loads without a conversion). 2: the HDF5 1.8 format (checksummed metadata), item ids as
// fixed-length strings, Fletcher-32 checksums on every chunk, float32 tables whatever the
// backbones computed in. 1: variable-length item ids, no checksums. Only 3 is read.
inline constexpr int kStateFileFormatVersion = 3;
// What a cache can hold, checked before anything of a file is read or allocated (and by the
// readers of a partial build's manifest): larger files are corrupt or not iisan caches.
inline constexpr int64_t kMaxCacheRows = int64_t{1} << 31;
inline constexpr int64_t kMaxKeptLayers = 4096;
inline constexpr int64_t kMaxStateWidth = 65536;
inline constexpr int64_t kMaxItemIdBytes = 1024;

class CacheError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class StateFileWriter {
 public:
  // `text_dim` / `image_dim` of 0 leave that modality out. `dtype`: what the tables store,
  // float32 or bfloat16 (anything else is a CacheError).
  StateFileWriter(std::filesystem::path final_path, const std::vector<std::string>& items,
                  int64_t kept_layers, int64_t text_dim, int64_t image_dim,
                  torch::ScalarType dtype = torch::kFloat32);
  ~StateFileWriter();
  StateFileWriter(const StateFileWriter&) = delete;
  StateFileWriter& operator=(const StateFileWriter&) = delete;

  // Rows [row_begin, row_begin + n) of one modality ("text" or "image"); `rows` is [n, K, D],
  // converted to the file's dtype (exactly, for the states of backbones that ran in it).
  void WriteRows(const std::string& modality, int64_t row_begin, const torch::Tensor& rows);
  // Records the attributes, closes the file and renames it into place.
  void Commit(const std::string& fingerprint, const nlohmann::json& inputs);

 private:
  std::filesystem::path final_path_;
  std::unique_ptr<data::AtomicFile> file_on_disk_;  // the temporary, until Commit
  std::filesystem::path temp_path_;
  int64_t file_ = -1;
  torch::ScalarType dtype_;
  bool committed_ = false;
};

struct StateFile {
  std::vector<std::string> items;
  torch::Tensor text;   // [N+1, K, D] in the file's dtype, undefined when absent
  torch::Tensor image;  // likewise
  std::string fingerprint;
  nlohmann::json inputs;
  int format_version = 0;
};

// Reads a whole cache into host memory. A truncated or foreign file is a CacheError that names it.
StateFile ReadStateFile(const std::filesystem::path& path);

// What a cache file holds, without its tables: cheap enough to check every cache in a folder.
struct StateFileHeader {
  std::vector<std::string> items;
  std::string fingerprint;
  nlohmann::json inputs;
  int format_version = 0;
  int64_t kept_layers = 0;
  int64_t text_dim = 0;   // 0: no text table
  int64_t image_dim = 0;  // 0: no image table
  torch::ScalarType dtype = torch::kFloat32;  // of both tables: float32 or bfloat16
};

// Reads a completed cache in row ranges (to fill a device table slab by slab, or to check a
// sample of rows). Opening checks the header as ReadStateFile does.
class StateFileReader {
 public:
  explicit StateFileReader(const std::filesystem::path& path);
  ~StateFileReader();
  StateFileReader(const StateFileReader&) = delete;
  StateFileReader& operator=(const StateFileReader&) = delete;

  const StateFileHeader& header() const { return header_; }
  // Rows [row_begin, row_begin + count) of "text" or "image" as [count, K, D] in the file's dtype.
  torch::Tensor ReadRows(const std::string& modality, int64_t row_begin, int64_t count) const;
  // The same rows read straight into `out`: a contiguous host tensor (pinned memory too) of the
  // file's dtype and shape [count, K, D], e.g. a slice of a table's leading rows.
  void ReadRowsInto(const std::string& modality, int64_t row_begin, const torch::Tensor& out) const;

 private:
  // The width of `modality`'s rows; a CacheError when the file has none or the rows are outside it.
  int64_t CheckRows(const std::string& modality, int64_t row_begin, int64_t count) const;

  std::filesystem::path path_;
  int64_t file_ = -1;
  StateFileHeader header_;
};

StateFileHeader ReadStateFileHeader(const std::filesystem::path& path);

}  // namespace iisan::cache
