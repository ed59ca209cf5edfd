// The trained model of every method in the comparison (IISAN.md §3–§5): an item encoder that
// turns item ids into 64-d embeddings, the SASRec user encoder on top, and the in-batch
// softmax loss. Only the item encoder differs between methods:
//   iisan            IISAN's side network on cached per-layer [CLS] states (device-resident)
//   iisan-uncached   the same side network on live frozen backbones (no autograd through them)
//   fft/adapter/     the §3.2 head on live backbones, trained entirely (FFT), through Houlsby
//   lora/bitfit      adapters, LoRA factors on query/value, or through their biases
// A batch embeds each distinct item once. On CUDA the backbones run under bf16 autocast; their
// frozen weights are stored in bf16 and what trains keeps fp32 master weights.
#pragma once

#include <array>
#include <functional>
#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include "core/models/backbone_config.h"
#include "core/models/bert.h"
#include "core/models/iisan.h"
#include "core/models/sasrec.h"
#include "core/models/vit.h"
#include "core/train/method.h"

namespace iisan::train {

// Cached per-layer [CLS] states, [N+1, K, D] per modality (row 0 = padding); an absent
// modality is an undefined tensor.
struct ItemStates {
  torch::Tensor text;
  torch::Tensor image;
  int64_t num_rows() const;
  ItemStates To(const torch::Device& device) const;
};

// What the live backbones read per item. Row 0 is padding: no tokens (attention mask all 0)
// and an all-zero normalised image, as the reference feeds it.
struct ItemInputs {
  torch::Tensor token_ids;       // [N+1, T] int64
  torch::Tensor attention_mask;  // [N+1, T] int64
  torch::Tensor pixels;          // [N+1, 3, S, S] uint8, resized; stays in host memory
  std::array<float, 3> mean{0.5f, 0.5f, 0.5f};  // x -> (x / 255 - mean) / std per channel
  std::array<float, 3> std{0.5f, 0.5f, 0.5f};
  int64_t num_rows() const;
};

// Left-padded sequences of one batch: item_ids [B, L+1] (int64), log_mask [B, L] (float):
// position k < L is an input, k + 1 its target (IISAN.md §2.6).
struct SequenceBatch {
  torch::Tensor item_ids;
  torch::Tensor log_mask;
};

// A batch's distinct items staged on the device for the live backbones (live methods).
struct StagedItems {
  torch::Tensor ids;     // [U] int64, on the device; 0 = the padding item
  torch::Tensor pixels;  // [U, 3, S, S] uint8 (resized), on the device; undefined without images
};

// Copies a host tensor to `device` without synchronising the host with the device: through
// pinned memory on CUDA (a copy from pageable memory waits for the stream), as is on the CPU.
torch::Tensor ToDeviceAsync(const torch::Tensor& host, const torch::Device& device);

// The distinct ids [U] of item_ids (CPU int64, any shape), sorted, then padded with the padding
// item 0 up to a multiple of `multiple` (capped at item_ids.numel(); 0 = no padding), and
// `inverse`, the row of each flattened position.
struct DistinctItems {
  torch::Tensor ids;
  torch::Tensor inverse;
};
DistinctItems FindDistinctItems(const torch::Tensor& item_ids, int64_t multiple = 0);

struct RecommenderConfig {
  Method method = Method::kIisan;
  models::Modality modality = models::Modality::kTextImage;
  models::IisanConfig side;        // IISAN methods; side.modality follows `modality`
  models::UserEncoderConfig user;  // user.embedding_dim is the item embedding width
  models::BertConfig text;         // live methods that use text
  models::ViTConfig image;         // live methods that use images
  std::vector<int> kept_layers;    // iisan-uncached: hidden-state indices fed to the side network
  int64_t adapter_bottleneck = 64;  // Adapter
  int64_t lora_rank = 8;            // LoRA
  double lora_alpha = 1.0;          // LoRA (loralib's default: scaling alpha / rank = 1/8)
};

class RecommenderImpl : public torch::nn::Module {
 public:
  // Builds the method's modules with their trainable flags set (IISAN.md §4, §5).
  explicit RecommenderImpl(const RecommenderConfig& config);

  // Moves the model and its item data to `device`. Cached IISAN needs `states` of the modalities
  // it reads (a table of another modality is dropped, not moved) and keeps them in their dtype:
  // a bf16 table stays bf16 and the side network casts the rows it gathers. Live methods need
  // `inputs` (the pixels stay in host memory and travel per batch); on CUDA, their frozen
  // backbone parameters are converted to bf16. Call once the weights are loaded.
  void Prepare(ItemStates states, ItemInputs inputs, const torch::Device& device);

  // Embeddings [M, d] (fp32, on the device) of item ids [M] (int64, on the CPU).
  torch::Tensor EmbedItems(const torch::Tensor& ids);
  // Mean in-batch softmax loss of one batch (built on the CPU; moved here). `pad_distinct_to`
  // (live methods) pads the batch's distinct items with the padding item up to a multiple of it,
  // as the CUDA-graph step does to keep few shapes; the loss and gradients do not change.
  torch::Tensor Loss(const SequenceBatch& batch, const torch::Tensor& log_popularity, int64_t pad_distinct_to = 0);

  // Live methods, in the three parts a captured step needs. StageItems copies item ids [U]
  // (int64, CPU) and their pixels (gathered into pinned memory) to the device without
  // synchronising; EmbedStaged and LossStaged read only device memory, so a CUDA graph can
  // record them. `inverse` [B*(L+1)] maps each position of item_ids [B, L+1] to its row of
  // `items`; rows no position maps to change nothing.
  StagedItems StageItems(const torch::Tensor& ids);
  torch::Tensor EmbedStaged(const StagedItems& items);
  torch::Tensor LossStaged(const StagedItems& items, const torch::Tensor& inverse, const torch::Tensor& item_ids,
                           const torch::Tensor& log_mask, const torch::Tensor& log_popularity);
  // Data-parallel form: `global` is the whole global batch (every rank's users, rank r's rows at
  // r * rows), this rank embeds its rows' items, `gather` all-gathers the embeddings, and the
  // result is this rank's share of the global loss (the ranks' values add up to it).
  torch::Tensor LossShard(const SequenceBatch& global, int64_t row_offset, int64_t rows,
                          const torch::Tensor& log_popularity,
                          const std::function<torch::Tensor(const torch::Tensor&)>& gather);
  // The same loss for cached IISAN from a batch already on the device, every position embedded
  // (no de-duplication, so shapes are fixed): no host work and no synchronisation, as a
  // captured CUDA graph needs. Rows of all-zero ids and mask are padding and change nothing.
  torch::Tensor LossOnDevice(const torch::Tensor& item_ids, const torch::Tensor& log_mask,
                             const torch::Tensor& log_popularity);
  // The whole item table [N+1, d], `chunk` items at a time (evaluation.h's ItemTableChunk),
  // without autograd.
  torch::Tensor ItemTable(int64_t chunk);
  // User vectors [U, d] from left-padded histories [U, L] (on the device) looked up in
  // `item_table`: the user encoder's output at the last position.
  torch::Tensor UserVectors(const torch::Tensor& history_ids, const torch::Tensor& item_table);

  // The reference's optimizer group of a parameter name (IISAN.md §6).
  models::OptimizerGroup GroupOf(const std::string& name) const;
  // Frozen backbones of IISAN stay in eval mode (no dropout), so that uncached and cached
  // IISAN compute the same states; the reference leaves BERT's dropout on (IISAN.md §9.7).
  void train(bool on = true) override;

  const RecommenderConfig& config() const { return config_; }
  const torch::Device& device() const { return device_; }
  // Cached IISAN: the tables the step gathers from, on the device.
  const ItemStates& item_states() const { return states_; }
  int64_t num_item_rows() const;

  // Registered as "item_encoder": IISAN's side network or the baselines' head (one of them).
  models::IisanItemEncoder side_network{nullptr};
  models::IntraItemEncoder head{nullptr};
  models::BertModel text_backbone{nullptr};   // "text_backbone", live methods using text
  models::ViTModel image_backbone{nullptr};   // "image_backbone", live methods using images
  models::UserEncoder user_encoder{nullptr};  // "user_encoder"

 private:
  torch::Tensor GatherPixels(const torch::Tensor& ids);  // [U, 3, S, S] uint8, pinned on CUDA
  torch::Tensor NormalisePixels(const StagedItems& items);

  RecommenderConfig config_;
  ItemStates states_;
  ItemInputs inputs_;
  torch::Tensor device_tokens_, device_mask_, pixel_mean_, pixel_std_;
  torch::Device device_ = torch::kCPU;
};
TORCH_MODULE(Recommender);

// Builds a batch from sequences (each 2..L+1 items, oldest first), left-padded with 0.
SequenceBatch MakeSequenceBatch(const std::vector<std::vector<int32_t>>& sequences, int64_t max_len);

}  // namespace iisan::train
