// Item encoders of every method, the loss and the evaluation passes.
#include "core/train/recommender.h"

#include <algorithm>
#include <cstring>
#include <optional>
#include <stdexcept>

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include "core/models/loss.h"
#include "core/models/modality.h"
#include "core/train/device_stats.h"

namespace iisan::train {
namespace {

bool Contains(const std::string& name, const char* part) { return name.find(part) != std::string::npos; }
bool EndsWith(const std::string& name, const std::string& suffix) {
  return name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Whether a backbone parameter trains under `method` (names relative to the backbone).
bool BackboneParameterTrains(Method method, const std::string& name, bool is_text) {
  switch (method) {
    case Method::kFft:
      return !(is_text && name.rfind("pooler.", 0) == 0);  // the pooler is never used (IISAN.md §3.1)
    case Method::kAdapter:
      return Contains(name, ".adapter.");
    case Method::kLora:
      return Contains(name, ".lora_") || EndsWith(name, ".query.bias") || EndsWith(name, ".value.bias");
    case Method::kBitfit:
      return EndsWith(name, "bias");
    case Method::kIisan:
    case Method::kIisanUncached:
      return false;
  }
  return false;
}

void SetBackboneTrainable(torch::nn::Module& backbone, Method method, bool is_text) {
  for (auto& item : backbone.named_parameters()) {
    item.value().set_requires_grad(BackboneParameterTrains(method, item.key(), is_text));
  }
}

using models::UsesImage;
using models::UsesText;

// The in-batch softmax loss of a batch from its position embeddings [B, L+1, d]: the user
// encoder reads positions 0..L-1, position k+1 is the target of position k.
torch::Tensor SequenceLoss(models::UserEncoder& user_encoder, const torch::Tensor& embeddings,
                           const torch::Tensor& item_ids, const torch::Tensor& log_mask,
                           const torch::Tensor& log_popularity) {
  auto user_out = user_encoder->forward(embeddings.narrow(1, 0, item_ids.size(1) - 1), log_mask);
  return models::InBatchSoftmaxLoss(user_out, embeddings, item_ids, log_mask, log_popularity);
}

}  // namespace

int64_t ItemStates::num_rows() const { return text.defined() ? text.size(0) : image.size(0); }

ItemStates ItemStates::To(const torch::Device& device) const {
  return {text.defined() ? text.to(device) : text, image.defined() ? image.to(device) : image};
}

int64_t ItemInputs::num_rows() const { return token_ids.defined() ? token_ids.size(0) : pixels.size(0); }

RecommenderImpl::RecommenderImpl(const RecommenderConfig& config) : config_(config) {
  const Method method = config_.method;
  const bool text = UsesText(config_.modality), image = UsesImage(config_.modality);
  // The trained modules are built first, so that their initialisation draws the same random
  // numbers whether or not backbones follow (cached and uncached IISAN start identical).
  if (UsesSideNetwork(method)) {
    auto side = config_.side;
    side.modality = config_.modality;
    side.embedding_dim = config_.user.embedding_dim;
    if (method == Method::kIisanUncached) {
      if (config_.kept_layers.empty()) throw std::runtime_error("iisan-uncached needs the kept hidden-state indices");
      const int64_t layers = text ? config_.text.num_hidden_layers : config_.image.num_hidden_layers;
      for (int index : config_.kept_layers) {
        if (index < 0 || index > layers) {
          throw std::runtime_error("kept layer " + std::to_string(index) + " is outside 0.." + std::to_string(layers));
        }
      }
      side.num_blocks = static_cast<int64_t>(config_.kept_layers.size());
      side.hidden_size = text ? config_.text.hidden_size : config_.image.hidden_size;
    }
    side_network = register_module("item_encoder", models::IisanItemEncoder(side));
  } else {
    head = register_module("item_encoder", models::IntraItemEncoder(config_.modality, config_.text.hidden_size,
                                                                     config_.image.hidden_size,
                                                                     config_.user.embedding_dim));
  }
  user_encoder = register_module("user_encoder", models::UserEncoder(config_.user));
  if (UsesLiveBackbones(method)) {
    models::PeftConfig peft;
    if (method == Method::kAdapter) peft.adapter_bottleneck = config_.adapter_bottleneck;
    if (method == Method::kLora) {
      peft.lora_rank = config_.lora_rank;
      peft.lora_alpha = config_.lora_alpha;
    }
    if (text) {
      text_backbone = register_module("text_backbone", models::BertModel(config_.text, peft));
      SetBackboneTrainable(*text_backbone, method, /*is_text=*/true);
    }
    if (image) {
      image_backbone = register_module("image_backbone", models::ViTModel(config_.image, peft));
      SetBackboneTrainable(*image_backbone, method, /*is_text=*/false);
    }
  }
}

void RecommenderImpl::Prepare(ItemStates states, ItemInputs inputs, const torch::Device& device) {
  device_ = device;
  to(device);
  if (UsesLiveBackbones(config_.method)) {
    if (UsesText(config_.modality) && !inputs.token_ids.defined()) {
      throw std::runtime_error(MethodName(config_.method) + " needs the items' tokenised titles");
    }
    if (UsesImage(config_.modality) && !inputs.pixels.defined()) {
      throw std::runtime_error(MethodName(config_.method) + " needs the items' images");
    }
    inputs_ = std::move(inputs);
    // Built once: a tensor made from host values per batch would synchronise with the device.
    pixel_mean_ = torch::tensor(std::vector<float>(inputs_.mean.begin(), inputs_.mean.end())).view({1, 3, 1, 1}).to(device);
    pixel_std_ = torch::tensor(std::vector<float>(inputs_.std.begin(), inputs_.std.end())).view({1, 3, 1, 1}).to(device);
    if (inputs_.token_ids.defined()) {
      device_tokens_ = inputs_.token_ids.to(device);
      device_mask_ = inputs_.attention_mask.to(device);
    }
    if (device.is_cuda()) {
      // What does not train is only read: bf16 halves its memory and its casts.
      torch::NoGradGuard no_grad;
      // is_empty() first: get() on an empty holder (a modality the run does not use) throws.
      for (auto* backbone : {text_backbone.is_empty() ? nullptr : static_cast<torch::nn::Module*>(text_backbone.get()),
                             image_backbone.is_empty() ? nullptr : static_cast<torch::nn::Module*>(image_backbone.get())}) {
        if (!backbone) continue;
        for (auto& p : backbone->parameters()) {
          if (!p.requires_grad()) p.set_data(p.data().to(torch::kBFloat16));
        }
      }
    }
  } else {
    // Only what the step reads goes to the device, in the dtype it comes in (a cast here would
    // make a second table: the side network casts the rows it gathers, which for bf16 is exact;
    // it also checks their shape).
    for (auto [table, used, name] : {std::tuple{&states.text, UsesText(config_.modality), "text"},
                                     std::tuple{&states.image, UsesImage(config_.modality), "image"}}) {
      if (!used) *table = torch::Tensor();
      if (used && !table->defined()) {
        throw std::runtime_error(std::string("cached IISAN needs the cached ") + name + " states");
      }
    }
    states_ = states.To(device);
  }
}

int64_t RecommenderImpl::num_item_rows() const {
  return UsesLiveBackbones(config_.method) ? inputs_.num_rows() : states_.num_rows();
}

void RecommenderImpl::train(bool on) {
  torch::nn::Module::train(on);
  if (UsesSideNetwork(config_.method)) {
    if (text_backbone) text_backbone->eval();
    if (image_backbone) image_backbone->eval();
  }
}

torch::Tensor ToDeviceAsync(const torch::Tensor& host, const torch::Device& device) {
  if (!device.is_cuda()) return host.to(device);
  // The caching host allocator keeps a pinned block until the copy that reads it has finished.
  return host.pin_memory().to(device, /*non_blocking=*/true);
}

DistinctItems FindDistinctItems(const torch::Tensor& item_ids, int64_t multiple) {
  const auto flat = item_ids.reshape({-1}).to(torch::kCPU);
  auto [unique_ids, inverse] = at::_unique(flat, /*sorted=*/true, /*return_inverse=*/true);
  const int64_t distinct = unique_ids.size(0);
  if (multiple <= 0) return {unique_ids, inverse};
  const int64_t rows = std::min(flat.size(0), (distinct + multiple - 1) / multiple * multiple);
  if (rows == distinct) return {unique_ids, inverse};
  auto padded = torch::zeros({rows}, torch::kInt64);
  padded.narrow(0, 0, distinct).copy_(unique_ids);
  return {padded, inverse};
}

torch::Tensor RecommenderImpl::GatherPixels(const torch::Tensor& ids) {
  const auto& pixels = inputs_.pixels;
  auto sizes = pixels.sizes().vec();
  sizes[0] = ids.size(0);
  auto options = pixels.options();
  // Pinned host memory lets the copy overlap the GPU's work on the previous batch; the
  // caching host allocator keeps the block until that copy has finished.
  if (device_.is_cuda()) options = options.pinned_memory(true);
  auto gathered = torch::empty(sizes, options);
  // Whole rows are copied in parallel: ATen's index_select walks uint8 element by element.
  const int64_t row_bytes = pixels.stride(0);
  const auto* source = pixels.data_ptr<uint8_t>();
  auto* target = gathered.data_ptr<uint8_t>();
  const auto contiguous_ids = ids.contiguous();
  const auto* index = contiguous_ids.data_ptr<int64_t>();
  at::parallel_for(0, ids.size(0), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) std::memcpy(target + i * row_bytes, source + index[i] * row_bytes, row_bytes);
  });
  return gathered;
}

StagedItems RecommenderImpl::StageItems(const torch::Tensor& ids) {
  if (!UsesLiveBackbones(config_.method)) throw std::logic_error("StageItems is for the live-backbone methods");
  StagedItems staged;
  const auto host_ids = ids.to(torch::kCPU).contiguous();
  staged.ids = ToDeviceAsync(host_ids, device_);
  if (UsesImage(config_.modality)) {
    const auto gathered = GatherPixels(host_ids);
    staged.pixels = device_.is_cuda() ? gathered.to(device_, /*non_blocking=*/true) : gathered;
  }
  return staged;
}

torch::Tensor RecommenderImpl::NormalisePixels(const StagedItems& items) {
  auto values = items.pixels.to(torch::kFloat32).div_(255.0);
  values = (values - pixel_mean_) / pixel_std_;
  // Padding is an all-zero normalised image, as in the reference.
  return values.masked_fill_((items.ids == 0).view({-1, 1, 1, 1}), 0.0);
}

torch::Tensor RecommenderImpl::EmbedStaged(const StagedItems& items) {
  const bool text = UsesText(config_.modality), image = UsesImage(config_.modality);
  std::vector<torch::Tensor> text_states, image_states;
  {
    // IISAN never backpropagates into its backbones: no activation of theirs is kept.
    std::optional<torch::NoGradGuard> no_grad;
    if (UsesSideNetwork(config_.method)) no_grad.emplace();
    // Uncached IISAN on CUDA: every backbone weight is frozen and bf16 (Prepare) and nothing
    // backpropagates into them, so the forwards run in bf16 throughout, as the cache build's do,
    // and compute the states a bf16 cache holds. Autocast would run each LayerNorm in fp32 with
    // a cast on either side (run H: 8.6 ms of a 43 ms step in casts, 4.7 ms in fp32 LayerNorms).
    // The baselines train parts of their backbones in fp32 and keep autocast.
    const bool native_bf16 = UsesSideNetwork(config_.method) && device_.is_cuda();
    std::optional<AutocastGuard> autocast;
    if (!native_bf16) autocast.emplace(device_);
    if (text) {
      text_states = text_backbone->ClsStates(device_tokens_.index_select(0, items.ids),
                                             device_mask_.index_select(0, items.ids));
    }
    if (image) {
      const auto pixels = NormalisePixels(items);
      image_states = image_backbone->ClsStates(native_bf16 ? pixels.to(torch::kBFloat16) : pixels);
    }
    if (!UsesSideNetwork(config_.method) && image) {
      // The baselines read ViT's last state after its final LayerNorm (IISAN.md §3.2).
      image_states.back() = image_backbone->ApplyFinalLayerNorm(image_states.back());
    }
  }
  if (UsesSideNetwork(config_.method)) {
    auto kept_cls = [&](const std::vector<torch::Tensor>& hidden) {
      std::vector<torch::Tensor> rows;
      for (int index : config_.kept_layers) rows.push_back(hidden.at(index));
      return torch::stack(rows, 1).to(torch::kFloat32);
    };
    return side_network->forward(text ? kept_cls(text_states) : torch::Tensor(),
                                 image ? kept_cls(image_states) : torch::Tensor());
  }
  return head->forward(text ? text_states.back() : torch::Tensor(),
                       image ? image_states.back() : torch::Tensor());
}

torch::Tensor RecommenderImpl::EmbedItems(const torch::Tensor& ids) {
  if (UsesLiveBackbones(config_.method)) return EmbedStaged(StageItems(ids));
  const auto device_ids = ToDeviceAsync(ids.to(torch::kCPU), device_);
  auto gather = [&](const torch::Tensor& table) {
    return table.defined() ? table.index_select(0, device_ids) : torch::Tensor();
  };
  return side_network->forward(gather(states_.text), gather(states_.image));
}

torch::Tensor RecommenderImpl::LossStaged(const StagedItems& items, const torch::Tensor& inverse,
                                         const torch::Tensor& item_ids, const torch::Tensor& log_mask,
                                         const torch::Tensor& log_popularity) {
  const int64_t batch_size = item_ids.size(0), seq_len = item_ids.size(1);
  const auto embeddings = EmbedStaged(items).index_select(0, inverse).view({batch_size, seq_len, -1});
  return SequenceLoss(user_encoder, embeddings, item_ids, log_mask, log_popularity);
}

torch::Tensor RecommenderImpl::Loss(const SequenceBatch& batch, const torch::Tensor& log_popularity,
                                   int64_t pad_distinct_to) {
  // Distinct items are found on the CPU, so that the step needs no device synchronisation.
  const auto distinct = FindDistinctItems(batch.item_ids, UsesLiveBackbones(config_.method) ? pad_distinct_to : 0);
  const auto inverse = ToDeviceAsync(distinct.inverse, device_);
  const auto item_ids = ToDeviceAsync(batch.item_ids.to(torch::kCPU), device_);
  const auto log_mask = ToDeviceAsync(batch.log_mask.to(torch::kCPU), device_);
  if (UsesLiveBackbones(config_.method)) {
    return LossStaged(StageItems(distinct.ids), inverse, item_ids, log_mask, log_popularity);
  }
  const int64_t batch_size = item_ids.size(0), seq_len = item_ids.size(1);
  const auto embeddings = EmbedItems(distinct.ids).index_select(0, inverse).view({batch_size, seq_len, -1});
  return SequenceLoss(user_encoder, embeddings, item_ids, log_mask, log_popularity);
}

torch::Tensor RecommenderImpl::LossShard(const SequenceBatch& global, int64_t row_offset, int64_t rows,
                                        const torch::Tensor& log_popularity,
                                        const std::function<torch::Tensor(const torch::Tensor&)>& gather) {
  const auto distinct = FindDistinctItems(global.item_ids.narrow(0, row_offset, rows));
  const int64_t seq_len = global.item_ids.size(1);
  auto local = EmbedItems(distinct.ids)
                   .index_select(0, ToDeviceAsync(distinct.inverse, device_))
                   .view({rows, seq_len, -1});
  const auto embeddings = gather(local);  // [world * rows, L+1, d]
  const auto item_ids = ToDeviceAsync(global.item_ids.to(torch::kCPU), device_);
  const auto log_mask = ToDeviceAsync(global.log_mask.to(torch::kCPU), device_);
  auto user_out = user_encoder->forward(local.narrow(1, 0, seq_len - 1), log_mask.narrow(0, row_offset, rows));
  return models::InBatchSoftmaxLossShard(user_out, row_offset, embeddings, item_ids, log_mask, log_popularity);
}

torch::Tensor RecommenderImpl::LossOnDevice(const torch::Tensor& item_ids, const torch::Tensor& log_mask,
                                           const torch::Tensor& log_popularity) {
  if (UsesLiveBackbones(config_.method)) throw std::logic_error("LossOnDevice is for cached IISAN");
  const auto flat = item_ids.reshape({-1});
  auto gather = [&](const torch::Tensor& table) {
    return table.defined() ? table.index_select(0, flat) : torch::Tensor();
  };
  const auto embeddings =
      side_network->forward(gather(states_.text), gather(states_.image)).view({item_ids.size(0), item_ids.size(1), -1});
  return SequenceLoss(user_encoder, embeddings, item_ids, log_mask, log_popularity);
}

torch::Tensor RecommenderImpl::ItemTable(int64_t chunk) {
  if (chunk < 1) throw std::invalid_argument("ItemTable: the chunk must be at least 1, got " + std::to_string(chunk));
  torch::NoGradGuard no_grad;
  const int64_t rows = num_item_rows();
  std::vector<torch::Tensor> parts;
  for (int64_t start = 0; start < rows; start += chunk) {
    parts.push_back(EmbedItems(torch::arange(start, std::min(rows, start + chunk), torch::kInt64)));
  }
  return torch::cat(parts, 0);
}

torch::Tensor RecommenderImpl::UserVectors(const torch::Tensor& history_ids, const torch::Tensor& item_table) {
  torch::NoGradGuard no_grad;
  auto embeddings = item_table.index_select(0, history_ids.reshape({-1}))
                        .view({history_ids.size(0), history_ids.size(1), -1});
  auto log_mask = (history_ids != 0).to(item_table.scalar_type());
  auto out = user_encoder->forward(embeddings, log_mask);
  return out.select(1, history_ids.size(1) - 1);
}

models::OptimizerGroup RecommenderImpl::GroupOf(const std::string& name) const {
  auto starts = [&](const char* prefix) { return name.rfind(prefix, 0) == 0; };
  const bool peft = Contains(name, ".adapter.") || Contains(name, ".lora_");
  if (starts("text_backbone.")) return peft ? models::OptimizerGroup::kAdapterText : models::OptimizerGroup::kText;
  if (starts("image_backbone.")) return peft ? models::OptimizerGroup::kAdapterImage : models::OptimizerGroup::kImage;
  if (starts("item_encoder.") && side_network) return models::IisanParameterGroup(name.substr(13));
  return models::OptimizerGroup::kRecsys;
}

SequenceBatch MakeSequenceBatch(const std::vector<std::vector<int32_t>>& sequences, int64_t max_len) {
  const int64_t batch_size = static_cast<int64_t>(sequences.size());
  auto ids = torch::zeros({batch_size, max_len + 1}, torch::kInt64);
  auto mask = torch::zeros({batch_size, max_len}, torch::kFloat32);
  auto ids_a = ids.accessor<int64_t, 2>();
  auto mask_a = mask.accessor<float, 2>();
  for (int64_t b = 0; b < batch_size; ++b) {
    const auto& seq = sequences[b];
    const int64_t n = static_cast<int64_t>(seq.size());
    if (n > max_len + 1 || n < 2) {
      throw std::invalid_argument("MakeSequenceBatch: a training sequence needs 2.." +
                                  std::to_string(max_len + 1) + " items, got " + std::to_string(n));
    }
    const int64_t pad = max_len + 1 - n;
    for (int64_t k = 0; k < n; ++k) ids_a[b][pad + k] = seq[k];
    for (int64_t k = pad; k < max_len; ++k) mask_a[b][k] = 1.0f;
  }
  return {ids, mask};
}

}  // namespace iisan::train
