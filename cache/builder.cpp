// Frozen-backbone forward passes over the items, chunk by chunk, with image decoding spread
// over threads so that the backbones are not left waiting on the CPU.
#include "cache/builder.h"

#include <csignal>
#include <fstream>
#include <cstdlib>
#include <future>
#include <mutex>
#include <numeric>
#include <optional>
#include <thread>

#include <glog/logging.h>
#include <torch/torch.h>

#include "cache/cache_dir.h"
#include "cache/partial_build.h"
#include "cache/state_file.h"
#include "core/data/image.h"
#include "core/data/progress.h"
#include "core/data/text_file.h"
#include "core/data/tokenizer.h"
#include "core/models/backbone_config.h"
#include "core/models/bert.h"
#include "core/models/hf_checkpoint.h"
#include "core/models/modality.h"
#include "core/models/vit.h"
#include "core/train/device_stats.h"

namespace iisan::cache {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

using models::UsesImage;
using models::UsesText;

// Whether `folder` holds weights to load (their files are logged); without them the backbone
// keeps its seeded random init, which is fine for smoke tests but meaningless for results.
bool AnnounceBackboneWeights(const std::string& what, const std::filesystem::path& folder, uint64_t seed) {
  if (!models::HasCheckpoint(folder)) {
    LOG(WARNING) << what << " backbone " << folder << " has no weights (model.safetensors): its weights are random "
                 << "(seed " << seed << "), so the cached states carry no pretrained knowledge";
    return false;
  }
  std::string files;
  for (const auto& file : models::CheckpointFiles(folder)) files += " " + file.filename().string();
  LOG(INFO) << what << " backbone weights from " << folder << ":" << files;
  return true;
}

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

struct StateComputer::Impl {
  Impl(const data::Dataset& dataset, const CacheBuildOptions& options, std::vector<int> kept)
      : dataset(dataset), options(options), kept(std::move(kept)) {}
  const data::Dataset& dataset;
  CacheBuildOptions options;
  std::vector<int> kept;
  std::optional<data::WordPieceTokenizer> tokenizer;
  models::BertModel bert{nullptr};
  data::ImagePreprocessConfig preprocess;
  models::ViTModel vit{nullptr};
  double text_seconds = 0;
  double image_seconds = 0;

  // [CLS] rows of the kept hidden states: float32 [B, K, D] on the host.
  torch::Tensor Kept(const std::vector<torch::Tensor>& cls) const {
    std::vector<torch::Tensor> rows;
    rows.reserve(kept.size());
    for (int index : kept) rows.push_back(cls.at(index));
    return torch::stack(rows, 1).to(torch::kCPU, torch::kFloat32);
  }

  torch::Tensor Text(const std::vector<int64_t>& rows) {
    const int tokens = options.title_max_tokens;
    const auto n = static_cast<int64_t>(rows.size());
    auto ids = torch::empty({n, tokens}, torch::kInt64);
    auto mask = torch::empty({n, tokens}, torch::kInt64);
    auto ids_a = ids.accessor<int64_t, 2>();
    auto mask_a = mask.accessor<int64_t, 2>();
    for (int64_t i = 0; i < n; ++i) {
      const auto encoded = tokenizer->Encode(dataset.titles.at(rows[i]), tokens);
      for (int t = 0; t < tokens; ++t) {
        ids_a[i][t] = encoded.input_ids[t];
        mask_a[i][t] = encoded.attention_mask[t];
      }
    }
    ids = ids.to(options.device);
    mask = mask.to(options.device);
    train::SynchronizeDevice(options.device);
    const auto start = Clock::now();
    auto cls = bert->ClsStates(ids, mask);
    train::SynchronizeDevice(options.device);
    text_seconds += SecondsSince(start);
    return Kept(cls);
  }

  torch::Tensor Image(const std::vector<int64_t>& rows) {
    const auto n = static_cast<int64_t>(rows.size());
    const int64_t pixels = 3LL * preprocess.height * preprocess.width;
    auto batch = torch::empty({n, 3, preprocess.height, preprocess.width}, torch::kFloat32);
    float* out = batch.data_ptr<float>();
    // Decode and resize in parallel: each worker takes every `workers`-th item of the batch.
    const auto workers = static_cast<int64_t>(std::max(1u, std::min(8u, std::thread::hardware_concurrency())));
    std::vector<std::future<void>> jobs;
    for (int64_t w = 0; w < std::min(workers, n); ++w) {
      jobs.push_back(std::async(std::launch::async, [&, w] {
        for (int64_t i = w; i < n; i += workers) {
          const auto values = data::PreprocessImage(data::DecodeImage(dataset.image_paths.at(rows[i])), preprocess);
          std::copy(values.begin(), values.end(), out + i * pixels);
        }
      }));
    }
    for (auto& job : jobs) job.get();
    const auto input = batch.to(options.device, options.dtype);
    train::SynchronizeDevice(options.device);
    const auto start = Clock::now();
    auto cls = vit->ClsStates(input);
    train::SynchronizeDevice(options.device);
    image_seconds += SecondsSince(start);
    return Kept(cls);
  }
};

StateComputer::StateComputer(const data::Dataset& dataset, const CacheBuildOptions& options, std::vector<int> kept)
    : impl_(std::make_unique<Impl>(dataset, options, std::move(kept))) {
  // Seeding and initialising go through torch's global generator: two computers made at once
  // (service workers, in-process ranks) must not interleave, or their random weights differ.
  static std::mutex init_mutex;
  std::lock_guard<std::mutex> lock(init_mutex);
  auto& impl = *impl_;
  if (UsesText(options.modality)) {
    const auto config = models::BertConfig::FromJsonFile(options.text_backbone / "config.json");
    impl.tokenizer.emplace(data::WordPieceTokenizer::FromVocabFile(options.text_backbone / "vocab.txt"));
    torch::manual_seed(options.seed);
    impl.bert = models::BertModel(config);
    if (AnnounceBackboneWeights("text", options.text_backbone, options.seed)) {
      models::LoadBertCheckpoint(impl.bert, options.text_backbone);
    }
    impl.bert->eval();
    impl.bert->to(options.device, options.dtype);
  }
  if (UsesImage(options.modality)) {
    const auto config = models::ViTConfig::FromJsonFile(options.image_backbone / "config.json");
    impl.preprocess = data::ImagePreprocessConfig::FromJsonFile(options.image_backbone / "preprocessor_config.json");
    torch::manual_seed(options.seed + 1);
    impl.vit = models::ViTModel(config);
    if (AnnounceBackboneWeights("image", options.image_backbone, options.seed + 1)) {
      models::LoadViTCheckpoint(impl.vit, options.image_backbone);
    }
    impl.vit->eval();
    impl.vit->to(options.device, options.dtype);
  }
}

StateComputer::~StateComputer() = default;

StateComputer::Rows StateComputer::Compute(const std::vector<int64_t>& rows) {
  torch::NoGradGuard no_grad;
  auto& impl = *impl_;
  std::vector<torch::Tensor> text, image;
  const auto batch = std::max<int64_t>(1, impl.options.batch_size);
  for (size_t begin = 0; begin < rows.size(); begin += batch) {
    const std::vector<int64_t> part(rows.begin() + begin, rows.begin() + std::min(rows.size(), begin + batch));
    if (impl.bert) text.push_back(impl.Text(part));
    if (impl.vit) image.push_back(impl.Image(part));
  }
  Rows out;
  if (!text.empty()) out.text = torch::cat(text);
  if (!image.empty()) out.image = torch::cat(image);
  return out;
}

int64_t StateComputer::text_dim() const { return impl_->bert ? impl_->bert->config().hidden_size : 0; }
int64_t StateComputer::image_dim() const { return impl_->vit ? impl_->vit->config().hidden_size : 0; }
double StateComputer::forward_seconds_text() const { return impl_->text_seconds; }
double StateComputer::forward_seconds_image() const { return impl_->image_seconds; }

std::filesystem::path PartialBuildDir(const std::filesystem::path& cache_path) {
  auto dir = cache_path;
  dir += ".partial";
  return dir;
}

PartialBuildInfo InspectPartialBuild(const std::filesystem::path& partial_dir) {
  PartialBuildInfo info;
  const auto manifest = PartialBuild::ReadManifest(partial_dir);
  if (!manifest) return info;
  try {
    ChunkLayout layout;
    const auto& json = (*manifest)["layout"];
    layout.items = json.at("items").get<int64_t>();
    layout.chunk_items = json.at("chunk_items").get<int64_t>();
    layout.kept_layers = json.at("kept_layers").get<int64_t>();
    layout.text_dim = json.at("text_dim").get<int64_t>();
    layout.image_dim = json.at("image_dim").get<int64_t>();
    if (layout.chunk_items < 1) return info;
    const auto build = PartialBuild::Attach(partial_dir, (*manifest)["fingerprint"].get<std::string>(), layout);
    info.fingerprint = (*manifest)["fingerprint"].get<std::string>();
    info.items = layout.items;
    info.chunks_total = layout.num_chunks();
    info.chunks_done = build.CountChunks();
  } catch (const std::exception&) {
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
  std::unique_ptr<StateComputer> computer;
  auto compute_chunk = [&](int64_t chunk) {
    if (!computer) computer = std::make_unique<StateComputer>(dataset, options, kept);
    std::vector<int64_t> rows(layout.count(chunk));
    std::iota(rows.begin(), rows.end(), layout.begin(chunk));
    const auto states = computer->Compute(rows);
    partial->WriteChunk(chunk, states.text, states.image);
    ++stats.chunks_computed;
    stats.items_computed += layout.count(chunk);
  };

  const int64_t kill_after = KillAfterChunk();
  int64_t my_items = 0;
  for (int64_t chunk : mine) my_items += layout.count(chunk);
  data::ProgressMeter progress("cache build", my_items, "items");
  if (control.on_progress) control.on_progress(stats.chunks_already_done, layout.num_chunks());
  for (int64_t chunk : mine) {
    compute_chunk(chunk);
    progress.Advance(layout.count(chunk));
    if (control.on_progress) control.on_progress(stats.chunks_already_done + stats.chunks_computed, layout.num_chunks());
    if (kill_after > 0 && stats.chunks_computed == kill_after) {
      LOG(WARNING) << kEnvKillAfterChunk << "=" << kill_after << ": killing this build process";
      google::FlushLogFiles(google::GLOG_INFO);
      std::raise(SIGKILL);
    }
  }
  progress.Finish();
  barrier();

  if (control.rank == 0) {
    StateFileWriter writer(path, dataset.item_ids, layout.kept_layers, layout.text_dim, layout.image_dim);
    for (int64_t chunk = 0; chunk < layout.num_chunks(); ++chunk) {
      auto rows = partial->ReadChunk(chunk);
      if (!rows) {
        compute_chunk(chunk);
        rows = partial->ReadChunk(chunk);
        if (!rows) throw CacheError(dir.string() + ": chunk " + std::to_string(chunk) + " cannot be read back after writing it");
      }
      if (layout.text_dim > 0) writer.WriteRows("text", layout.begin(chunk), rows->first);
      if (layout.image_dim > 0) writer.WriteRows("image", layout.begin(chunk), rows->second);
    }
    writer.Commit(stats.fingerprint, inputs);
    data::RemoveTree(dir);
  }
  barrier();
  if (computer) {
    stats.forward_seconds_text = computer->forward_seconds_text();
    stats.forward_seconds_image = computer->forward_seconds_image();
  }
  stats.seconds = SecondsSince(start);
  if (control.rank == 0) {
    // Next to the cache, for throughput reports: <key>.stats.json.
    const auto stats_path = StatsPathFor(path);
    std::ofstream(stats_path) << stats.ToJson().dump(2) << "\n";
    LOG(INFO) << "cache written: " << path << " (" << stats.chunks_computed << " chunks computed here, "
              << stats.chunks_already_done << " resumed)";
  }
  return stats;
}

}  // namespace iisan::cache
