// The cache in memory: loads a cache file's tables into host memory or straight into device
// memory in the dtype the file stores (a bfloat16 cache stays bfloat16 there: the side network
// casts the rows it gathers, exactly), only the tables of the modalities asked for, and gathers
// rows by item row index from the resident table. On a GPU the rows travel through two pinned
// slabs, one read from the file while the other is copied, so that no whole host copy is made.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <torch/types.h>

#include "core/models/iisan.h"

namespace iisan::cache {

struct StateTables {
  torch::Tensor text;   // [N+1, K, D] on the requested device, in the file's dtype; undefined when not loaded
  torch::Tensor image;  // likewise
  std::vector<std::string> items;
  std::string fingerprint;
};

struct LoadOptions {
  torch::Device device = torch::kCPU;
  // The tables of this modality (each must be in the file; another table is never read); every
  // table the file holds when empty.
  std::optional<models::Modality> modality;
  int64_t slab_rows = 4096;  // on a GPU: rows read and copied at a time
};

// CacheError naming the file if it is missing, truncated or foreign, if `expected_fingerprint`
// (when not empty) or `expected_items` (when not empty) differ from the file's, or if it lacks
// a table the options ask for.
StateTables LoadStateTables(const std::filesystem::path& path, const LoadOptions& options = {},
                            const std::string& expected_fingerprint = "",
                            const std::vector<std::string>& expected_items = {});

// table[rows]: the states of item rows `rows` (int64, any shape, on the table's device).
torch::Tensor GatherItemRows(const torch::Tensor& table, const torch::Tensor& rows);

}  // namespace iisan::cache
