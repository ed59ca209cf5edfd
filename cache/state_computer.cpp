// The frozen backbones' forward passes behind StateComputer (builder.h): a host thread prepares
// batches (tokenise, decode and resize images on a worker pool) one or two ahead of the device,
// which runs the backbones and copies each batch's kept layers back.
#include "cache/builder.h"

#include <atomic>
#include <condition_variable>
#include <deque>
#include <future>
#include <mutex>
#include <optional>
#include <thread>
#include <variant>

#include <glog/logging.h>
#include <torch/torch.h>

#include "core/data/image.h"
#include "core/data/progress.h"
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

}  // namespace

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
    // With weights, the random init they would overwrite is skipped (CPU time at set-up).
    const bool weights = AnnounceBackboneWeights("text", options.text_backbone, options.backbone_init_seed);
    torch::manual_seed(options.backbone_init_seed);
    impl.bert = models::BertModel(config, models::PeftConfig{},
                                  weights ? models::WeightInit::kSkip : models::WeightInit::kRandom);
    if (weights) models::LoadBertCheckpoint(impl.bert, options.text_backbone);
    impl.bert->eval();
    impl.bert->to(options.device, options.dtype);
  }
  if (UsesImage(options.modality)) {
    const auto config = models::ViTConfig::FromJsonFile(options.image_backbone / "config.json");
    impl.preprocess = data::ImagePreprocessConfig::FromJsonFile(options.image_backbone / "preprocessor_config.json");
    impl.preprocess.RequireBatchable(options.image_backbone / "preprocessor_config.json");
    const auto table = data::PixelValueTable(impl.preprocess);
    impl.pixel_table = torch::tensor(table, torch::kFloat32).to(options.device);
    impl.pixel_offsets = torch::arange(3, torch::kInt64).mul(256).view({1, 3, 1, 1}).to(options.device);
    const bool weights = AnnounceBackboneWeights("image", options.image_backbone, options.backbone_init_seed + 1);
    torch::manual_seed(options.backbone_init_seed + 1);
    impl.vit = models::ViTModel(config, models::PeftConfig{},
                                weights ? models::WeightInit::kSkip : models::WeightInit::kRandom);
    if (weights) models::LoadViTCheckpoint(impl.vit, options.image_backbone);
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

}  // namespace iisan::cache
