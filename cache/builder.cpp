// Frozen-backbone forward passes over the items, chunk by chunk, with image decoding spread
// over threads so that the backbones are not left waiting on the CPU.
#include "cache/builder.h"

#include <csignal>
#include <fstream>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <future>
#include <mutex>
#include <numeric>
#include <optional>
#include <thread>
#include <variant>

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

// One batch's inputs, prepared on the host while the device works on earlier batches: token
// ids and masks, and the images as resized bytes (a quarter of the floats' size to copy; the
// device turns them into floats through the exact value table).
struct HostBatch {
  size_t part = 0;  // which list of rows (chunk) it belongs to
  std::vector<int64_t> rows;
  torch::Tensor ids, mask;  // int64 [n, T]
  torch::Tensor pixels;     // uint8 [n, 3, H, W]
  bool last_of_part = false;
};

// A bounded first-in first-out queue between the host preparation thread and the device loop.
template <typename T>
class BoundedQueue {
 public:
  explicit BoundedQueue(size_t capacity) : capacity_(capacity) {}
  // False when the queue was closed (the consumer gave up) instead of accepting `item`.
  bool Push(T item) {
    std::unique_lock<std::mutex> lock(mutex_);
    not_full_.wait(lock, [&] { return closed_ || items_.size() < capacity_; });
    if (closed_) return false;
    items_.push_back(std::move(item));
    not_empty_.notify_one();
    return true;
  }
  T Pop() {
    std::unique_lock<std::mutex> lock(mutex_);
    not_empty_.wait(lock, [&] { return !items_.empty(); });
    T item = std::move(items_.front());
    items_.pop_front();
    not_full_.notify_one();
    return item;
  }
  void Close() {
    std::lock_guard<std::mutex> lock(mutex_);
    closed_ = true;
    not_full_.notify_all();
  }

 private:
  size_t capacity_;
  std::mutex mutex_;
  std::condition_variable not_full_, not_empty_;
  std::deque<T> items_;
  bool closed_ = false;
};

struct StateComputer::Impl {
  Impl(const data::Dataset& dataset, const CacheBuildOptions& options, std::vector<int> kept)
      : dataset(dataset), options(options), kept(std::move(kept)) {}
  const data::Dataset& dataset;
  CacheBuildOptions options;
  std::vector<int> kept;
  std::optional<data::WordPieceTokenizer> tokenizer;
  models::BertModel bert{nullptr};
  data::ImagePreprocessConfig preprocess;
  torch::Tensor pixel_table;    // PixelValueTable on the device, float32 [3 * 256]
  torch::Tensor pixel_offsets;  // channel * 256, int64 [1, 3, 1, 1] on the device: the table's rows
  models::ViTModel vit{nullptr};
  PipelineTimes times;

  int Threads() const {
    if (options.threads > 0) return options.threads;
    return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  }

  torch::TensorOptions HostOptions(torch::ScalarType dtype) const {
    auto host = torch::TensorOptions().dtype(dtype);
    // Pinned memory lets the copy to the device run without waiting for it; the caching host
    // allocator keeps each block until the copy that reads it has finished.
    if (options.device.is_cuda()) host = host.pinned_memory(true);
    return host;
  }

  // Tokenises and decodes one batch, its items spread over the worker threads.
  HostBatch Prepare(size_t part, std::vector<int64_t> rows) {
    HostBatch batch;
    batch.part = part;
    batch.rows = std::move(rows);
    const auto n = static_cast<int64_t>(batch.rows.size());
    const int tokens = options.title_max_tokens;
    int64_t pixels = 0;
    if (bert) {
      batch.ids = torch::empty({n, tokens}, HostOptions(torch::kInt64));
      batch.mask = torch::empty({n, tokens}, HostOptions(torch::kInt64));
    }
    if (vit) {
      pixels = 3LL * preprocess.height * preprocess.width;
      batch.pixels = torch::empty({n, 3, preprocess.height, preprocess.width}, HostOptions(torch::kUInt8));
    }
    int64_t* ids = bert ? batch.ids.data_ptr<int64_t>() : nullptr;
    int64_t* mask = bert ? batch.mask.data_ptr<int64_t>() : nullptr;
    uint8_t* bytes = vit ? batch.pixels.data_ptr<uint8_t>() : nullptr;
    auto prepare_item = [&](int64_t i) {
      const int64_t row = batch.rows[i];
      if (ids) {
        const auto encoded = tokenizer->Encode(dataset.titles.at(row), tokens);
        std::copy(encoded.input_ids.begin(), encoded.input_ids.begin() + tokens, ids + i * tokens);
        std::copy(encoded.attention_mask.begin(), encoded.attention_mask.begin() + tokens, mask + i * tokens);
      }
      if (bytes) {
        const auto image = data::DecodeImage(dataset.image_paths.at(row));
        data::PreprocessImageBytes(image, preprocess, bytes + i * pixels);
      }
    };
    const auto workers = std::min<int64_t>(Threads(), n);
    if (workers <= 1) {
      for (int64_t i = 0; i < n; ++i) prepare_item(i);
      return batch;
    }
    std::atomic<int64_t> next{0};
    std::vector<std::future<void>> jobs;
    for (int64_t w = 0; w < workers; ++w) {
      jobs.push_back(std::async(std::launch::async, [&] {
        for (int64_t i = next++; i < n; i = next++) prepare_item(i);
      }));
    }
    // Every job is waited for before the first error is rethrown: they reference this frame.
    std::exception_ptr error;
    for (auto& job : jobs) {
      try {
        job.get();
      } catch (...) {
        if (!error) error = std::current_exception();
      }
    }
    if (error) std::rethrow_exception(error);
    return batch;
  }

  // [CLS] rows of the kept hidden states: float32 [B, K, D] on the device.
  torch::Tensor Kept(const std::vector<torch::Tensor>& cls) const {
    std::vector<torch::Tensor> rows;
    rows.reserve(kept.size());
    for (int index : kept) rows.push_back(cls.at(index));
    return torch::stack(rows, 1).to(torch::kFloat32);
  }

  torch::Tensor TextForward(const torch::Tensor& ids, const torch::Tensor& mask) {
    return Kept(bert->ClsStates(ids, mask));
  }

  torch::Tensor ImageForward(const torch::Tensor& bytes) {
    // The exact floats of data::PreprocessImage: entry channel * 256 + byte of the table.
    const auto index = bytes.to(torch::kInt64).add(pixel_offsets);
    const auto values = pixel_table.index_select(0, index.reshape({-1})).view(bytes.sizes());
    return Kept(vit->ClsStates(values.to(options.dtype)));
  }

  // A device result back on the host (float32 [B, K, D]); on a GPU through pinned memory, which
  // copies several times faster than pageable memory.
  torch::Tensor ToHost(const torch::Tensor& rows) const {
    if (!options.device.is_cuda()) return rows.to(torch::kCPU);
    auto host = torch::empty(rows.sizes(), HostOptions(rows.scalar_type()));
    host.copy_(rows, /*non_blocking=*/true);
    train::SynchronizeDevice(options.device);
    return host;
  }

  // One forward of each backbone on a full batch of placeholder inputs, on a GPU: loading the
  // kernels (CUDA loads them lazily, at first use), the BLAS heuristics and the allocator's
  // blocks then count as setting up, not as the first batch's forward.
  void WarmUp() {
    if (!options.device.is_cuda()) return;
    torch::NoGradGuard no_grad;
    const int64_t n = std::max<int64_t>(1, options.batch_size);
    const auto on_device = torch::TensorOptions().device(options.device);
    if (bert) {
      const auto ids = torch::zeros({n, options.title_max_tokens}, on_device.dtype(torch::kInt64));
      ToHost(TextForward(ids, torch::ones_like(ids)));
    }
    if (vit) ToHost(ImageForward(torch::zeros({n, 3, preprocess.height, preprocess.width}, on_device.dtype(torch::kUInt8))));
  }

  // The device half of one batch: copy in, both forwards (each timed between device
  // synchronisations; ToHost's copy back is the closing one).
  std::pair<torch::Tensor, torch::Tensor> Forward(const HostBatch& batch) {
    std::pair<torch::Tensor, torch::Tensor> out;
    const bool async = options.device.is_cuda();
    if (bert) {
      const std::vector<torch::Tensor> inputs{batch.ids.to(options.device, async), batch.mask.to(options.device, async)};
      train::SynchronizeDevice(options.device);
      const auto start = Clock::now();
      out.first = ToHost(TextForward(inputs[0], inputs[1]));
      times.forward_text += SecondsSince(start);
    }
    if (vit) {
      const std::vector<torch::Tensor> inputs{batch.pixels.to(options.device, async)};
      train::SynchronizeDevice(options.device);
      const auto start = Clock::now();
      out.second = ToHost(ImageForward(inputs[0]));
      times.forward_image += SecondsSince(start);
    }
    return out;
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
    const auto table = data::PixelValueTable(impl.preprocess);
    impl.pixel_table = torch::tensor(table, torch::kFloat32).to(options.device);
    impl.pixel_offsets = torch::arange(3, torch::kInt64).mul(256).view({1, 3, 1, 1}).to(options.device);
    torch::manual_seed(options.seed + 1);
    impl.vit = models::ViTModel(config);
    if (AnnounceBackboneWeights("image", options.image_backbone, options.seed + 1)) {
      models::LoadViTCheckpoint(impl.vit, options.image_backbone);
    }
    impl.vit->eval();
    impl.vit->to(options.device, options.dtype);
  }
  impl.WarmUp();
}

StateComputer::~StateComputer() = default;

void StateComputer::ComputeParts(const std::vector<std::vector<int64_t>>& parts,
                                 const std::function<void(size_t part, Rows rows)>& done) {
  torch::NoGradGuard no_grad;
  auto& impl = *impl_;
  const auto batch_size = std::max<int64_t>(1, impl.options.batch_size);
  // The host thread prepares up to kAhead batches beyond the one on the device.
  constexpr size_t kAhead = 2;
  using Item = std::variant<HostBatch, std::exception_ptr>;
  BoundedQueue<Item> queue(kAhead);
  std::thread producer([&] {
    try {
      for (size_t part = 0; part < parts.size(); ++part) {
        const auto& rows = parts[part];
        for (size_t begin = 0; begin < rows.size(); begin += batch_size) {
          const auto end = std::min(rows.size(), begin + static_cast<size_t>(batch_size));
          const auto start = Clock::now();
          auto batch = impl.Prepare(part, std::vector<int64_t>(rows.begin() + begin, rows.begin() + end));
          batch.last_of_part = end == rows.size();
          impl.times.prepare += SecondsSince(start);
          if (!queue.Push(std::move(batch))) return;
        }
        if (rows.empty()) {
          HostBatch empty;
          empty.part = part;
          empty.last_of_part = true;
          if (!queue.Push(std::move(empty))) return;
        }
      }
    } catch (...) {
      queue.Push(std::current_exception());
    }
  });
  // However this loop ends, the producer is told to stop and joined before the frame goes.
  struct Joiner {
    BoundedQueue<Item>& queue;
    std::thread& thread;
    ~Joiner() {
      queue.Close();
      thread.join();
    }
  } joiner{queue, producer};

  std::vector<torch::Tensor> text, image;
  for (size_t finished = 0; finished < parts.size();) {
    const auto wait_start = Clock::now();
    auto item = queue.Pop();
    impl.times.wait += SecondsSince(wait_start);
    if (auto* error = std::get_if<std::exception_ptr>(&item)) std::rethrow_exception(*error);
    auto& batch = std::get<HostBatch>(item);
    if (!batch.rows.empty()) {
      auto [t, i] = impl.Forward(batch);
      if (t.defined()) text.push_back(std::move(t));
      if (i.defined()) image.push_back(std::move(i));
    }
    if (!batch.last_of_part) continue;
    Rows out;
    if (!text.empty()) out.text = torch::cat(text);
    if (!image.empty()) out.image = torch::cat(image);
    text.clear();
    image.clear();
    done(batch.part, std::move(out));
    ++finished;
  }
}

StateComputer::Rows StateComputer::Compute(const std::vector<int64_t>& rows) {
  Rows out;
  ComputeParts({rows}, [&](size_t, Rows computed) { out = std::move(computed); });
  return out;
}

int64_t StateComputer::text_dim() const { return impl_->bert ? impl_->bert->config().hidden_size : 0; }
int64_t StateComputer::image_dim() const { return impl_->vit ? impl_->vit->config().hidden_size : 0; }
const PipelineTimes& StateComputer::times() const { return impl_->times; }

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
  // Rank 0 writes the HDF5 file (under a temporary name) as its own chunks finish, beside the
  // next chunk's forwards; at the end only chunks found on disk or computed by other ranks are
  // read back into it.
  std::unique_ptr<StateFileWriter> writer;
  std::vector<char> in_file(static_cast<size_t>(layout.num_chunks()), 0);
  if (control.rank == 0) {
    writer = std::make_unique<StateFileWriter>(path, dataset.item_ids, layout.kept_layers, layout.text_dim,
                                               layout.image_dim);
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
    std::ofstream(stats_path) << stats.ToJson().dump(2) << "\n";
    LOG(INFO) << "cache written: " << path << " (" << stats.chunks_computed << " chunks computed here, "
              << stats.chunks_already_done << " resumed)";
  }
  return stats;
}

}  // namespace iisan::cache
