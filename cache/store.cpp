#include "cache/store.h"

#include <glog/logging.h>
#include <torch/torch.h>

#include "cache/state_file.h"

namespace iisan::cache {
namespace {

torch::Tensor LoadTable(const StateFileReader& reader, const std::string& modality, int64_t dim,
                        const LoadOptions& options) {
  const auto rows = static_cast<int64_t>(reader.header().items.size());
  auto table = torch::empty({rows, reader.header().kept_layers, dim},
                            torch::TensorOptions().dtype(options.dtype).device(options.device));
  const int64_t slab = std::max<int64_t>(1, options.slab_rows);
  for (int64_t begin = 0; begin < rows; begin += slab) {
    const int64_t count = std::min(slab, rows - begin);
    auto host = reader.ReadRows(modality, begin, count).to(options.dtype);
    if (options.device.is_cuda()) host = host.pin_memory();
    table.narrow(0, begin, count).copy_(host);
  }
  return table;
}

}  // namespace

StateTables LoadStateTables(const std::filesystem::path& path, const LoadOptions& options,
                            const std::string& expected_fingerprint, const std::vector<std::string>& expected_items) {
  StateFileReader reader(path);
  const auto& header = reader.header();
  if (!expected_fingerprint.empty() && header.fingerprint != expected_fingerprint) {
    throw CacheError(path.string() + ": built from other inputs (key " + header.fingerprint + ", this job needs " +
                     expected_fingerprint + "); delete the file to rebuild it, or leave cache.path empty to use "
                     "cache.dir/<key>.h5");
  }
  if (!expected_items.empty() && header.items != expected_items) {
    throw CacheError(path.string() + ": its item list differs from the dataset's items.tsv (another dataset or "
                     "another item order); delete it and rebuild");
  }
  StateTables out;
  out.items = header.items;
  out.fingerprint = header.fingerprint;
  if (header.text_dim > 0) out.text = LoadTable(reader, "text", header.text_dim, options);
  if (header.image_dim > 0) out.image = LoadTable(reader, "image", header.image_dim, options);
  LOG(INFO) << "loaded cache " << path << " (" << header.items.size() - 1 << " items) into " << options.device << " "
            << c10::toString(options.dtype);
  return out;
}

torch::Tensor GatherItemRows(const torch::Tensor& table, const torch::Tensor& rows) {
  auto flat = rows.reshape({-1}).to(table.device(), torch::kInt64);
  std::vector<int64_t> shape(rows.sizes().begin(), rows.sizes().end());
  for (int64_t d = 1; d < table.dim(); ++d) shape.push_back(table.size(d));
  return table.index_select(0, flat).view(shape);
}

}  // namespace iisan::cache
