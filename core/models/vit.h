// ViT image encoder with Hugging Face ViTModel's module tree (no pooler, as inside
// ViTForImageClassification); forward returns every hidden state, as IISAN taps them.
#pragma once

#include <memory>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include "core/models/backbone_config.h"

namespace iisan::models {

class ViTLayerImpl;

// Parameter names (as Hugging Face): embeddings.cls_token [1,1,H],
// embeddings.position_embeddings [1,P+1,H], embeddings.patch_embeddings.projection.*,
// encoder.layer.<i>.attention.attention.{query,key,value}.*, encoder.layer.<i>.attention.output.dense.*,
// encoder.layer.<i>.intermediate.dense.*, encoder.layer.<i>.output.dense.*,
// encoder.layer.<i>.layernorm_{before,after}.*, layernorm.*.
// Weights start as Hugging Face's random init; dropout is active in train() mode only.
class ViTModelImpl : public torch::nn::Module {
 public:
  ViTModelImpl(const ViTConfig& config, const PeftConfig& peft = {}, WeightInit init = WeightInit::kRandom);

  // pixel_values: [B, num_channels, image_size, image_size], floating point. Returns
  // num_hidden_layers + 1 tensors [B, P+1, hidden] (token 0 is [CLS]): index 0 is the
  // embedding output, index i the output of layer i, all before the final LayerNorm.
  std::vector<torch::Tensor> forward(const torch::Tensor& pixel_values);

  // Only the [CLS] row of every hidden state, [B, hidden] each (index as forward's): without
  // autograd no full hidden state outlives its layer, which keeps evaluation and frozen
  // backbones small in memory.
  std::vector<torch::Tensor> ClsStates(const torch::Tensor& pixel_values);

  // The final `layernorm`, which Hugging Face applies to the last hidden state only.
  torch::Tensor ApplyFinalLayerNorm(const torch::Tensor& hidden);

  const ViTConfig& config() const { return config_; }

 private:
  std::vector<torch::Tensor> Run(const torch::Tensor& pixel_values, bool cls_only);
  ViTConfig config_;
  torch::Tensor cls_token_;
  torch::Tensor position_embeddings_;
  torch::nn::Conv2d projection_{nullptr};
  torch::nn::Dropout embeddings_dropout_{nullptr};
  std::vector<std::shared_ptr<ViTLayerImpl>> layers_;
  torch::nn::LayerNorm layernorm_{nullptr};
};
TORCH_MODULE(ViTModel);

}  // namespace iisan::models
