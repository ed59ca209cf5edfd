// The cache in memory: loads a cache file's tables into host memory or straight into device
// memory (slab by slab, converted to the table dtype on the host, so that neither a full fp32
// host copy in the target dtype nor an fp32 device copy is ever made), and gathers rows by item
// row index from the resident table.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <torch/types.h>

namespace iisan::cache {

struct StateTables {
  torch::Tensor text;   // [N+1, K, D] on the requested device and dtype; undefined when absent
  torch::Tensor image;  // likewise
  std::vector<std::string> items;
  std::string fingerprint;
};

struct LoadOptions {
  torch::Device device = torch::kCPU;
  torch::ScalarType dtype = torch::kFloat32;
  int64_t slab_rows = 4096;  // rows read and copied at a time
};

// CacheError naming the file if it is missing, truncated or foreign, or if `expected_fingerprint`
// (when not empty) or `expected_items` (when not empty) differ from the file's.
StateTables LoadStateTables(const std::filesystem::path& path, const LoadOptions& options = {},
                            const std::string& expected_fingerprint = "",
                            const std::vector<std::string>& expected_items = {});

// table[rows]: the states of item rows `rows` (int64, any shape, on the table's device).
torch::Tensor GatherItemRows(const torch::Tensor& table, const torch::Tensor& rows);

}  // namespace iisan::cache
