// The SASRec-style user encoder of IISAN.md §3.4: learned positions, post-LayerNorm blocks,
// causal attention that also skips padded positions.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

namespace iisan::models {

// Defaults are the reference's (100,224 parameters). LayerNorm eps (1e-6), the feed-forward
// width (4 x embedding_dim) and the mask value (-1e9) are fixed by the reference.
struct UserEncoderConfig {
  int64_t embedding_dim = 64;
  int64_t max_len = 10;  // learned positions; sequences may be shorter
  int64_t num_blocks = 2;
  int64_t num_heads = 2;
  double dropout = 0.1;  // on the input, attention probabilities and both sublayer outputs

  // Throws std::runtime_error naming the first bad field.
  void Validate() const;
};

class UserEncoderBlockImpl;

// Parameter names: position_embedding.weight, input_norm.{weight,bias},
// blocks.<i>.self_attention.{query,key,value}.weight, blocks.<i>.attention_output.weight,
// blocks.<i>.attention_norm.*, blocks.<i>.ffn_in.*, blocks.<i>.ffn_out.*, blocks.<i>.ffn_norm.*.
// Every Linear and Embedding weight starts xavier_normal, Linear biases 0.
class UserEncoderImpl : public torch::nn::Module {
 public:
  explicit UserEncoderImpl(const UserEncoderConfig& config);

  // item_embeddings: [B, L, d] with L <= max_len, positions 0..L-1 (left padding puts the
  // latest item at L-1). log_mask: [B, L], nonzero = real item. Query i sees key j iff
  // j <= i and log_mask[j] != 0. Returns [B, L, d], one prediction per position.
  torch::Tensor forward(const torch::Tensor& item_embeddings, const torch::Tensor& log_mask);

  const UserEncoderConfig& config() const { return config_; }

 private:
  UserEncoderConfig config_;
  torch::nn::Embedding position_embedding_{nullptr};
  torch::nn::LayerNorm input_norm_{nullptr};
  torch::nn::Dropout input_dropout_{nullptr};
  std::vector<std::shared_ptr<UserEncoderBlockImpl>> blocks_;
};
TORCH_MODULE(UserEncoder);

}  // namespace iisan::models
