// The trained part of cached IISAN: the side-network item encoder fed with cached backbone
// states, the SASRec user encoder on top, and the in-batch softmax loss. The cached states
// live on the training device; a batch gathers its rows by item id and embeds each distinct
// item once (DESIGN.md, performance principles).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include "core/models/iisan.h"
#include "core/models/sasrec.h"

namespace iisan::train {

// Cached per-layer [CLS] states, [N+1, K, D] per modality (row 0 = padding); an absent
// modality is an undefined tensor.
struct ItemStates {
  torch::Tensor text;
  torch::Tensor image;
  int64_t num_rows() const;
  ItemStates To(const torch::Device& device) const;
};

// Left-padded sequences of one batch: item_ids [B, L+1] (int64), log_mask [B, L] (float):
// position k < L is an input, k + 1 its target (IISAN.md §2.6).
struct SequenceBatch {
  torch::Tensor item_ids;
  torch::Tensor log_mask;
};

class IisanRecommenderImpl : public torch::nn::Module {
 public:
  IisanRecommenderImpl(const models::IisanConfig& item_config, const models::UserEncoderConfig& user_config);

  // Embeddings [M, d] of the given item ids [M].
  torch::Tensor EmbedItems(const torch::Tensor& ids, const ItemStates& states);
  // Mean in-batch softmax loss of one training batch.
  torch::Tensor Loss(const SequenceBatch& batch, const ItemStates& states, const torch::Tensor& log_popularity);
  // The whole item table [N+1, d], in chunks of `chunk` items, without autograd.
  torch::Tensor ItemTable(const ItemStates& states, int64_t chunk);
  // User vectors [U, d] from left-padded histories [U, L] looked up in `item_table`: the user
  // encoder's output at the last position.
  torch::Tensor UserVectors(const torch::Tensor& history_ids, const torch::Tensor& item_table);

  models::IisanItemEncoder item_encoder{nullptr};
  models::UserEncoder user_encoder{nullptr};
};
TORCH_MODULE(IisanRecommender);

// Builds a batch from sequences (each at most L+1 items, oldest first), left-padded with 0.
SequenceBatch MakeSequenceBatch(const std::vector<std::vector<int32_t>>& sequences, int64_t max_len);

}  // namespace iisan::train
