// SASRec user encoder: positions, masked self-attention blocks, xavier initialisation.
#include "core/models/sasrec.h"

#include <stdexcept>

#include <torch/torch.h>

#include "core/models/transformer_blocks.h"

namespace iisan::models {
namespace {

constexpr double kLayerNormEps = 1e-6;
constexpr int64_t kFeedForwardMultiplier = 4;
constexpr double kMaskedScore = -1e9;

torch::nn::LayerNorm MakeLayerNorm(int64_t dim) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(kLayerNormEps));
}

}  // namespace

void UserEncoderConfig::Validate() const {
  auto require_positive = [](const char* field, int64_t value) {
    if (value <= 0) {
      throw std::runtime_error(std::string("UserEncoderConfig: field '") + field + "' must be positive, got " +
                                  std::to_string(value));
    }
  };
  require_positive("embedding_dim", embedding_dim);
  require_positive("max_len", max_len);
  require_positive("num_blocks", num_blocks);
  require_positive("num_heads", num_heads);
  if (embedding_dim % num_heads != 0) {
    throw std::runtime_error("UserEncoderConfig: field 'embedding_dim' (" + std::to_string(embedding_dim) +
                                ") must be a multiple of 'num_heads' (" + std::to_string(num_heads) + ")");
  }
  if (!(dropout >= 0 && dropout < 1)) {
    throw std::runtime_error("UserEncoderConfig: field 'dropout' must be in [0, 1), got " + c10::str(dropout));
  }
}

// Post-LayerNorm block: a = LN(x + Dropout(W_O MHA(x))), y = LN(a + Dropout(FFN(a))).
class UserEncoderBlockImpl : public torch::nn::Module {
 public:
  explicit UserEncoderBlockImpl(const UserEncoderConfig& config) {
    const int64_t dim = config.embedding_dim;
    const int64_t inner = kFeedForwardMultiplier * dim;
    self_attention_ = register_module(
        "self_attention", MultiHeadSelfAttention(dim, config.num_heads, /*bias=*/false, config.dropout));
    attention_output_ =
        register_module("attention_output", torch::nn::Linear(torch::nn::LinearOptions(dim, dim).bias(false)));
    attention_norm_ = register_module("attention_norm", MakeLayerNorm(dim));
    ffn_in_ = register_module("ffn_in", torch::nn::Linear(dim, inner));
    ffn_out_ = register_module("ffn_out", torch::nn::Linear(inner, dim));
    ffn_norm_ = register_module("ffn_norm", MakeLayerNorm(dim));
    dropout_ = register_module("dropout", torch::nn::Dropout(config.dropout));
  }

  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& additive_mask) {
    const auto context = self_attention_->forward(x, additive_mask);
    const auto attended = attention_norm_->forward(x + dropout_->forward(Dense(attention_output_, context)));
    const auto inner = torch::relu(Dense(ffn_in_, attended));
    return ffn_norm_->forward(attended + dropout_->forward(Dense(ffn_out_, inner)));
  }

 private:
  MultiHeadSelfAttention self_attention_{nullptr};
  torch::nn::Linear attention_output_{nullptr};
  torch::nn::LayerNorm attention_norm_{nullptr};
  torch::nn::Linear ffn_in_{nullptr};
  torch::nn::Linear ffn_out_{nullptr};
  torch::nn::LayerNorm ffn_norm_{nullptr};
  torch::nn::Dropout dropout_{nullptr};
};

UserEncoderImpl::UserEncoderImpl(const UserEncoderConfig& config) : config_(config) {
  config_.Validate();
  position_embedding_ =
      register_module("position_embedding", torch::nn::Embedding(config_.max_len, config_.embedding_dim));
  input_norm_ = register_module("input_norm", MakeLayerNorm(config_.embedding_dim));
  input_dropout_ = register_module("input_dropout", torch::nn::Dropout(config_.dropout));
  auto block_list = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < config_.num_blocks; ++i) {
    blocks_.push_back(std::make_shared<UserEncoderBlockImpl>(config_));
    block_list->push_back(blocks_.back());
  }
  InitializeTransformerWeights(*this, [](const torch::Tensor& weight) { torch::nn::init::xavier_normal_(weight); });
}

torch::Tensor UserEncoderImpl::forward(const torch::Tensor& item_embeddings, const torch::Tensor& log_mask) {
  const bool shape_ok = item_embeddings.dim() == 3 && item_embeddings.size(1) <= config_.max_len &&
                        item_embeddings.size(2) == config_.embedding_dim;
  if (!shape_ok) {
    throw std::runtime_error("UserEncoder::forward: item_embeddings must be [B, L <= " +
                                std::to_string(config_.max_len) + ", " + std::to_string(config_.embedding_dim) +
                                "], got " + c10::str(item_embeddings.sizes()));
  }
  const int64_t length = item_embeddings.size(1);
  if (log_mask.dim() != 2 || log_mask.size(0) != item_embeddings.size(0) || log_mask.size(1) != length) {
    throw std::runtime_error("UserEncoder::forward: log_mask must be [B, L] = " +
                                c10::str(item_embeddings.sizes().slice(0, 2)) + ", got " + c10::str(log_mask.sizes()));
  }
  const auto device = item_embeddings.device();
  const auto positions = torch::arange(length, torch::TensorOptions().dtype(torch::kInt64).device(device));
  auto hidden = input_dropout_->forward(input_norm_->forward(item_embeddings + position_embedding_->forward(positions)));

  // [B, 1, L, L]: query i sees key j iff j <= i and key j is a real item. The additive mask is
  // at least fp32, where -1e9 stays finite, so fully masked (padding) rows stay finite.
  const auto causal = torch::ones({length, length}, torch::TensorOptions().dtype(torch::kBool).device(device)).tril();
  const auto visible = causal.unsqueeze(0).logical_and((log_mask != 0).unsqueeze(1)).unsqueeze(1);
  const auto mask_dtype = at::promote_types(item_embeddings.scalar_type(), torch::kFloat32);
  const auto additive_mask =
      torch::zeros(visible.sizes(), torch::TensorOptions().dtype(mask_dtype).device(device))
          .masked_fill(visible.logical_not(), kMaskedScore);

  for (const auto& block : blocks_) hidden = block->forward(hidden, additive_mask);
  return hidden;
}

}  // namespace iisan::models
