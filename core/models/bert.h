// BERT text encoder with Hugging Face BertModel's module tree, so that parameter names are
// the checkpoint's state-dict keys; forward returns every hidden state, as IISAN taps them.
#pragma once

#include <memory>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include "core/models/backbone_config.h"

namespace iisan::models {

class BertLayerImpl;

// Parameter names (as Hugging Face): embeddings.{word,position,token_type}_embeddings.weight,
// embeddings.LayerNorm.*, encoder.layer.<i>.attention.self.{query,key,value}.*,
// encoder.layer.<i>.attention.output.{dense,LayerNorm}.*, encoder.layer.<i>.intermediate.dense.*,
// encoder.layer.<i>.output.{dense,LayerNorm}.*, pooler.dense.*.
// Weights start as Hugging Face's random init; dropout is active in train() mode only.
class BertModelImpl : public torch::nn::Module {
 public:
  BertModelImpl(const BertConfig& config, const PeftConfig& peft = {}, WeightInit init = WeightInit::kRandom);

  // input_ids: [B, T] int64; attention_mask: [B, T], 1 = attend, 0 = padding (any dtype).
  // Token types are all 0 and positions 0..T-1. Returns num_hidden_layers + 1 tensors
  // [B, T, hidden]: index 0 is the embedding output, index i the output of layer i.
  std::vector<torch::Tensor> forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask);

  // Only the [CLS] row of every hidden state, [B, hidden] each (index as forward's): without
  // autograd no full hidden state outlives its layer, which keeps evaluation and frozen
  // backbones small in memory.
  std::vector<torch::Tensor> ClsStates(const torch::Tensor& input_ids, const torch::Tensor& attention_mask);

  const BertConfig& config() const { return config_; }

 private:
  std::vector<torch::Tensor> Run(const torch::Tensor& input_ids, const torch::Tensor& attention_mask, bool cls_only);
  BertConfig config_;
  torch::nn::Embedding word_embeddings_{nullptr};
  torch::nn::Embedding position_embeddings_{nullptr};
  torch::nn::Embedding token_type_embeddings_{nullptr};
  torch::nn::LayerNorm embeddings_norm_{nullptr};
  torch::nn::Dropout embeddings_dropout_{nullptr};
  std::vector<std::shared_ptr<BertLayerImpl>> layers_;
};
TORCH_MODULE(BertModel);

}  // namespace iisan::models
