#include "cache/store.h"

#include <tuple>

#include <glog/logging.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include "cache/state_file.h"
#include "core/models/modality.h"

namespace iisan::cache {
namespace {

torch::Tensor LoadTable(const StateFileReader& reader, const std::string& modality, int64_t dim,
                        const LoadOptions& options) {
  const auto& header = reader.header();
  const auto rows = static_cast<int64_t>(header.items.size());
  const auto on_host = torch::TensorOptions().dtype(header.dtype);
  if (!options.device.is_cuda()) {
    // One read, straight into the table.
    auto table = torch::empty({rows, header.kept_layers, dim}, on_host);
    reader.ReadRowsInto(modality, 0, table);
    return table.to(options.device);
  }
  auto table = torch::empty({rows, header.kept_layers, dim}, on_host.device(options.device));
  const int64_t slab = std::max<int64_t>(1, std::min(options.slab_rows, rows));
  // Slab i is read into staging[i % 2] while slab i - 1 is copied from the other one; the copy
  // of slab i - 2 from this one was waited for before slab i - 1 was copied.
  const torch::Tensor staging[2] = {torch::empty({slab, header.kept_layers, dim}, on_host.pinned_memory(true)),
                                    torch::empty({slab, header.kept_layers, dim}, on_host.pinned_memory(true))};
  int64_t index = 0;
  for (int64_t begin = 0; begin < rows; begin += slab, ++index) {
    const int64_t count = std::min(slab, rows - begin);
    const auto host = staging[index % 2].narrow(0, 0, count);
    reader.ReadRowsInto(modality, begin, host);
    torch::cuda::synchronize(options.device.index());
    table.narrow(0, begin, count).copy_(host, /*non_blocking=*/true);
  }
  torch::cuda::synchronize(options.device.index());
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
  const bool text = options.modality ? models::UsesText(*options.modality) : header.text_dim > 0;
  const bool image = options.modality ? models::UsesImage(*options.modality) : header.image_dim > 0;
  for (const auto& [wanted, dim, name] : {std::tuple{text, header.text_dim, "text"},
                                          std::tuple{image, header.image_dim, "image"}}) {
    if (wanted && dim == 0) {
      throw CacheError(path.string() + ": holds no " + name + " states, but the model reads " + name +
                       "; is it the cache of another model.modality?");
    }
  }
  StateTables out;
  out.items = header.items;
  out.fingerprint = header.fingerprint;
  if (text) out.text = LoadTable(reader, "text", header.text_dim, options);
  if (image) out.image = LoadTable(reader, "image", header.image_dim, options);
  LOG(INFO) << "loaded cache " << path << " (" << header.items.size() - 1 << " items"
            << (text ? ", text" : "") << (image ? ", image" : "") << ") into " << options.device << " "
            << c10::toString(header.dtype);
  return out;
}

torch::Tensor GatherItemRows(const torch::Tensor& table, const torch::Tensor& rows) {
  auto flat = rows.reshape({-1}).to(table.device(), torch::kInt64);
  std::vector<int64_t> shape(rows.sizes().begin(), rows.sizes().end());
  for (int64_t d = 1; d < table.dim(); ++d) shape.push_back(table.size(d));
  return table.index_select(0, flat).view(shape);
}

}  // namespace iisan::cache
