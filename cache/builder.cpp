// Building a cache: the items' states computed chunk by chunk (state_computer.cpp runs the
// backbones), each chunk written as it finishes, resumable after a kill, shared across ranks,
// then assembled into the HDF5 file; and the build's timing.
#include "cache/builder.h"

#include <csignal>
#include <cstdlib>
#include <future>
#include <numeric>
#include <optional>

#include <glog/logging.h>
#include <torch/torch.h>

#include "cache/cache_dir.h"
#include "cache/partial_build.h"
#include "cache/state_file.h"
#include "core/data/atomic_file.h"
#include "core/data/progress.h"
#include "core/data/text_file.h"
#include "core/models/backbone_config.h"
#include "core/models/modality.h"

namespace iisan::cache {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

using models::UsesImage;
using models::UsesText;


// Per token and layer: QKV and output projections (4 H^2) and the MLP (2 H I) multiply-adds,
// plus attention over `tokens` keys (QK^T and AV: 2 tokens H).
double EncoderFlops(int64_t tokens, int64_t layers, int64_t hidden, int64_t intermediate) {
  const double macs_per_token = 4.0 * hidden * hidden + 2.0 * hidden * intermediate + 2.0 * tokens * hidden;
  return 2.0 * macs_per_token * static_cast<double>(tokens) * static_cast<double>(layers);
}

int64_t KillAfterChunk() {
  const char* value = std::getenv(kEnvKillAfterChunk);
  return value ? std::atoll(value) : 0;
}

}  // namespace

nlohmann::json BuildStats::ToJson() const {
  const double total_forward = forward_seconds_text + forward_seconds_image;
  const double flops = (flops_per_item_text + flops_per_item_image) * static_cast<double>(items_computed);
  return {{"fingerprint", fingerprint},
          {"path", path.string()},
          {"items", items},
          {"chunks_total", chunks_total},
          {"chunks_already_done", chunks_already_done},
          {"chunks_computed", chunks_computed},
          {"items_computed", items_computed},
          {"seconds", seconds},
          {"items_per_second", seconds > 0 ? static_cast<double>(items_computed) / seconds : 0.0},
          {"forward_seconds", {{"text", forward_seconds_text}, {"image", forward_seconds_image}, {"total", total_forward}}},
          {"pipeline_seconds", {{"setup", setup_seconds}, {"prepare", prepare_seconds}, {"wait_for_host", wait_seconds},
                                {"write_chunks_waited", write_seconds}, {"assemble", assemble_seconds}}},
          {"forward_items_per_second", total_forward > 0 ? static_cast<double>(items_computed) / total_forward : 0.0},
          {"flops_per_item", {{"text", flops_per_item_text}, {"image", flops_per_item_image},
                              {"total", flops_per_item_text + flops_per_item_image}}},
          {"forward_tflops_per_second", total_forward > 0 ? flops / total_forward / 1e12 : 0.0},
          {"device", device},
          {"dtype", dtype},
          {"rank", rank},
          {"world_size", world_size}};
}

ForwardFlops ForwardFlopsPerItem(const CacheBuildOptions& options) {
  ForwardFlops out;
  if (UsesText(options.modality)) {
    const auto c = models::BertConfig::FromJsonFile(options.text_backbone / "config.json");
    out.text = EncoderFlops(options.title_max_tokens, c.num_hidden_layers, c.hidden_size, c.intermediate_size);
  }
  if (UsesImage(options.modality)) {
    const auto c = models::ViTConfig::FromJsonFile(options.image_backbone / "config.json");
    const double patch_embedding = 2.0 * static_cast<double>(c.num_patches()) *
                                   static_cast<double>(c.num_channels * c.patch_size * c.patch_size * c.hidden_size);
    out.image = patch_embedding +
                EncoderFlops(c.num_patches() + 1, c.num_hidden_layers, c.hidden_size, c.intermediate_size);
  }
  return out;
}

std::filesystem::path PartialBuildDir(const std::filesystem::path& cache_path) {
  auto dir = cache_path;
  dir += ".partial";
  return dir;
}

PartialBuildInfo InspectPartialBuild(const std::filesystem::path& partial_dir) {
  PartialBuildInfo info;
  const auto manifest = PartialBuild::ReadManifest(partial_dir);
  if (!manifest) return info;
  const auto layout = ParseChunkLayout((*manifest)["layout"]);
  const auto& fingerprint = (*manifest)["fingerprint"];
  if (!layout || !fingerprint.is_string()) return info;
  try {
    // Attach reads the manifest again: one with fields beyond the layout's, or one that a build
    // rewrote meanwhile, is reported as unreadable.
    const auto build = PartialBuild::Attach(partial_dir, fingerprint.get<std::string>(), *layout);
    info.fingerprint = fingerprint.get<std::string>();
    info.items = layout->items;
    info.chunks_total = layout->num_chunks();
    info.chunks_done = build.CountChunks();
  } catch (const CacheError&) {
    return PartialBuildInfo{};
  }
  return info;
}

BuildStats BuildStateCache(const data::Dataset& dataset, const CacheBuildOptions& options,
                           const std::filesystem::path& path, const BuildControl& control) {
  const auto start = Clock::now();
  if (control.world_size > 1 && !control.barrier) {
    throw std::invalid_argument("BuildStateCache: a build over several ranks needs a barrier");
  }
  if (options.chunk_items < 1) throw CacheError("cache.chunk_items must be at least 1");
  auto barrier = [&] {
    if (control.world_size > 1) control.barrier();
  };
  const auto inputs = CacheInputs(dataset, options);
  BuildStats stats;
  stats.fingerprint = CacheFingerprint(inputs);
  stats.path = path;
  stats.items = dataset.num_items();
  stats.device = options.device.str();
  stats.dtype = DtypeName(options.dtype);
  stats.rank = control.rank;
  stats.world_size = control.world_size;
  const auto flops = ForwardFlopsPerItem(options);
  stats.flops_per_item_text = flops.text;
  stats.flops_per_item_image = flops.image;

  const auto kept = inputs["kept_layers"].get<std::vector<int>>();
  ChunkLayout layout;
  layout.items = dataset.num_items();
  layout.chunk_items = options.chunk_items;
  layout.kept_layers = static_cast<int64_t>(kept.size());
  if (UsesText(options.modality)) {
    layout.text_dim = models::BertConfig::FromJsonFile(options.text_backbone / "config.json").hidden_size;
  }
  if (UsesImage(options.modality)) {
    layout.image_dim = models::ViTConfig::FromJsonFile(options.image_backbone / "config.json").hidden_size;
  }
  stats.chunks_total = layout.num_chunks();

  const auto dir = PartialBuildDir(path);
  std::optional<PartialBuild> partial;
  if (control.rank == 0) partial = PartialBuild::Prepare(dir, stats.fingerprint, inputs, layout);
  barrier();
  if (control.rank != 0) partial = PartialBuild::Attach(dir, stats.fingerprint, layout);
  stats.chunks_already_done = partial->CountChunks();
  if (control.rank == 0) {
    LOG(INFO) << "building cache " << path << " (key " << stats.fingerprint << "): " << layout.items << " items, "
              << kept.size() << " kept hidden states, " << layout.num_chunks() << " chunks of " << layout.chunk_items
              << " items on " << control.world_size << " rank(s), " << stats.device << " " << stats.dtype;
    if (stats.chunks_already_done > 0) {
      LOG(INFO) << "resuming: " << stats.chunks_already_done << " of " << layout.num_chunks()
                << " chunks already done";
    }
  }

  std::vector<int64_t> mine;
  for (int64_t chunk = control.rank; chunk < layout.num_chunks(); chunk += control.world_size) {
    if (!partial->HasChunk(chunk)) mine.push_back(chunk);
  }
  // Rank 0 writes the HDF5 file (under a temporary name) as its own chunks finish, beside the
  // next chunk's forwards; at the end only chunks found on disk or computed by other ranks are
  // read back into it.
  std::unique_ptr<StateFileWriter> writer;
  std::vector<char> in_file(static_cast<size_t>(layout.num_chunks()), 0);
  if (control.rank == 0) {
    writer = std::make_unique<StateFileWriter>(path, dataset.item_ids, layout.kept_layers, layout.text_dim,
                                               layout.image_dim, options.dtype);
  }
  auto write_rows = [&](int64_t chunk, const torch::Tensor& text, const torch::Tensor& image) {
    if (layout.text_dim > 0) writer->WriteRows("text", layout.begin(chunk), text);
    if (layout.image_dim > 0) writer->WriteRows("image", layout.begin(chunk), image);
    in_file[static_cast<size_t>(chunk)] = 1;
  };

  std::unique_ptr<StateComputer> computer;
  auto make_computer = [&] {
    if (computer) return;
    const auto setup_start = Clock::now();
    computer = std::make_unique<StateComputer>(dataset, options, kept);
    stats.setup_seconds = SecondsSince(setup_start);
  };
  auto rows_of = [&](int64_t chunk) {
    std::vector<int64_t> rows(layout.count(chunk));
    std::iota(rows.begin(), rows.end(), layout.begin(chunk));
    return rows;
  };

  const int64_t kill_after = KillAfterChunk();
  int64_t my_items = 0;
  for (int64_t chunk : mine) my_items += layout.count(chunk);
  data::ProgressMeter progress("cache build", my_items, "items");
  if (control.on_progress) control.on_progress(stats.chunks_already_done, layout.num_chunks());
  // Each chunk file is written on its own thread while the next chunk computes; the write before
  // it is waited for first, so at most one is in flight and a chunk counts once it is on disk.
  std::future<void> writing;
  auto finish_write = [&] {
    if (!writing.valid()) return;
    const auto wait_start = Clock::now();
    writing.get();
    stats.write_seconds += SecondsSince(wait_start);
    ++stats.chunks_computed;
    if (control.on_progress) control.on_progress(stats.chunks_already_done + stats.chunks_computed, layout.num_chunks());
    if (kill_after > 0 && stats.chunks_computed == kill_after) {
      LOG(WARNING) << kEnvKillAfterChunk << "=" << kill_after << ": killing this build process";
      google::FlushLogFiles(google::GLOG_INFO);
      std::raise(SIGKILL);
    }
  };
  if (!mine.empty()) {
    make_computer();
    std::vector<std::vector<int64_t>> parts;
    for (int64_t chunk : mine) parts.push_back(rows_of(chunk));
    try {
      computer->ComputeParts(parts, [&](size_t part, StateComputer::Rows states) {
        finish_write();
        const int64_t chunk = mine[part];
        writing = std::async(std::launch::async, [&, chunk, states = std::move(states)] {
          partial->WriteChunk(chunk, states.text, states.image);
          if (writer) write_rows(chunk, states.text, states.image);
        });
        stats.items_computed += layout.count(chunk);
        progress.Advance(layout.count(chunk));
      });
    } catch (...) {
      // A chunk being written is either completed or left as a temporary file; never abandoned
      // mid-write with this frame gone.
      if (writing.valid()) writing.wait();
      throw;
    }
    finish_write();
  }
  progress.Finish();
  barrier();

  if (control.rank == 0) {
    const auto assemble_start = Clock::now();
    for (int64_t chunk = 0; chunk < layout.num_chunks(); ++chunk) {
      if (in_file[static_cast<size_t>(chunk)]) continue;
      auto rows = partial->ReadChunk(chunk);
      if (!rows) {
        make_computer();
        const auto states = computer->Compute(rows_of(chunk));
        partial->WriteChunk(chunk, states.text, states.image);
        ++stats.chunks_computed;
        stats.items_computed += layout.count(chunk);
        rows = partial->ReadChunk(chunk);
        if (!rows) throw CacheError(dir.string() + ": chunk " + std::to_string(chunk) + " cannot be read back after writing it");
      }
      write_rows(chunk, rows->first, rows->second);
    }
    writer->Commit(stats.fingerprint, inputs);
    data::RemoveTree(dir);
    stats.assemble_seconds = SecondsSince(assemble_start);
  }
  barrier();
  if (computer) {
    const auto& times = computer->times();
    stats.forward_seconds_text = times.forward_text;
    stats.forward_seconds_image = times.forward_image;
    stats.prepare_seconds = times.prepare;
    stats.wait_seconds = times.wait;
  }
  stats.seconds = SecondsSince(start);
  if (control.rank == 0) {
    // Next to the cache, for throughput reports: <key>.stats.json.
    const auto stats_path = StatsPathFor(path);
    data::WriteFileAtomically(stats_path, stats.ToJson().dump(2) + "\n");
    LOG(INFO) << "cache written: " << path << " (" << stats.chunks_computed << " chunks computed here, "
              << stats.chunks_already_done << " resumed)";
  }
  return stats;
}

}  // namespace iisan::cache
