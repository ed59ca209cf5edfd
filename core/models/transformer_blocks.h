// Pieces shared by the BERT, ViT and SASRec encoders: activations, multi-head self-attention
// and Hugging Face-style weight initialisation.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <torch/nn/module.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include "core/models/backbone_config.h"

namespace iisan::models {

torch::Tensor Activate(HiddenActivation activation, const torch::Tensor& x);

// x W^T + b for a Linear layer through ATen's linear, which folds the bias into the product (one
// addmm) at every input rank. torch::nn::Linear::forward (LibTorch's functional linear) does
// that only for 2-D inputs: for [B, T, H] it multiplies, then adds the bias in a kernel of its
// own, a second pass over the output that halved the rate of the encoders' [tokens, 768] x
// [768, N] bf16 products on an H200 (tools/gemm_shapes.py, experiments/bench/forward_ops.cpp).
// Every Linear of our models runs through this.
torch::Tensor Dense(const torch::nn::Linear& layer, const torch::Tensor& x);

// Query/key/value projections and scaled dot-product attention over all heads. The output
// projection is left to the caller: its name, residual and normalisation differ per encoder.
// Registered children: query, key, value; with lora_rank > 0 also query.lora_{A,B} and
// value.lora_{A,B} (loralib's names: A is [rank, in], B is [out, rank]).
// With LibTorch 2 or later the product runs through at::scaled_dot_product_attention (flash or
// memory-efficient kernels on GPU); LibTorch 1.x computes softmax(QKᵀ/√d + mask) V explicitly.
class MultiHeadSelfAttentionImpl : public torch::nn::Module {
 public:
  MultiHeadSelfAttentionImpl(int64_t hidden_size, int64_t num_heads, bool bias, double probs_dropout,
                             int64_t lora_rank = 0, double lora_alpha = 1.0);

  // hidden: [B, T, H]. additive_mask: broadcastable to [B, heads, T, T] and added to the
  // scaled scores, or undefined for full attention. Returns the heads' contexts, [B, T, H].
  torch::Tensor forward(const torch::Tensor& hidden, const torch::Tensor& additive_mask = {});

 private:
  torch::Tensor Project(torch::nn::Linear& projection, const torch::Tensor& lora_a, const torch::Tensor& lora_b,
                        const torch::Tensor& hidden);

  int64_t num_heads_;
  int64_t head_dim_;
  double lora_scaling_ = 0.0;
  torch::Tensor query_lora_a_, query_lora_b_, value_lora_a_, value_lora_b_;
  torch::nn::Linear query_{nullptr};
  torch::nn::Linear key_{nullptr};
  torch::nn::Linear value_{nullptr};
  torch::nn::Dropout probs_dropout_{nullptr};
};
TORCH_MODULE(MultiHeadSelfAttention);

// The value that masks an attention score: the dtype's lowest finite value, but never below
// -1e30, so that the mask survives a cast to bf16 (autocast) without becoming -inf, which
// would turn a fully masked row (a padding item's title) into NaN.
double AttentionMaskValue(torch::ScalarType dtype);

// Registers under `name` an empty module with no computation of its own: a scope that makes
// parameter names follow Hugging Face's nesting (e.g. "attention.output.dense").
std::shared_ptr<torch::nn::Module> RegisterScope(torch::nn::Module& parent, const std::string& name);

// The shape of Hugging Face's _init_weights: every Linear, Conv2d and Embedding weight under
// `root` goes through `init_weight`, their biases and Embedding padding rows become 0, and
// LayerNorms are reset to weight 1, bias 0. Parameters registered directly on a module (ViT's
// [CLS] token, say) are the caller's business.
void InitializeTransformerWeights(torch::nn::Module& root,
                                  const std::function<void(const torch::Tensor&)>& init_weight);

// In place: N(0, std²) truncated to [-2, 2], the absolute default bounds of
// torch.nn.init.trunc_normal_ that Hugging Face's ViT relies on.
void FillTruncatedNormal(const torch::Tensor& tensor, double std);

}  // namespace iisan::models
