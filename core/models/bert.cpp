// BERT encoder: embeddings, post-LayerNorm transformer layers, and the (unused) pooler.
#include "core/models/bert.h"

#include <stdexcept>

#include <torch/torch.h>

#include "core/models/iisan.h"
#include "core/models/transformer_blocks.h"

namespace iisan::models {

// One post-LayerNorm encoder layer: attention.{self,output}, intermediate, output.
class BertLayerImpl : public torch::nn::Module {
 public:
  BertLayerImpl(const BertConfig& config, const PeftConfig& peft) : activation_(config.hidden_act) {
    const int64_t hidden = config.hidden_size;
    const auto norm = torch::nn::LayerNormOptions({hidden}).eps(config.layer_norm_eps);
    auto attention = RegisterScope(*this, "attention");
    self_attention_ = attention->register_module(
        "self", MultiHeadSelfAttention(hidden, config.num_attention_heads, /*bias=*/true,
                                       config.attention_probs_dropout_prob, peft.lora_rank, peft.lora_alpha));
    auto attention_output = RegisterScope(*attention, "output");
    attention_dense_ = attention_output->register_module("dense", torch::nn::Linear(hidden, hidden));
    attention_norm_ = attention_output->register_module("LayerNorm", torch::nn::LayerNorm(norm));
    intermediate_dense_ = RegisterScope(*this, "intermediate")
                              ->register_module("dense", torch::nn::Linear(hidden, config.intermediate_size));
    auto output = RegisterScope(*this, "output");
    output_dense_ = output->register_module("dense", torch::nn::Linear(config.intermediate_size, hidden));
    output_norm_ = output->register_module("LayerNorm", torch::nn::LayerNorm(norm));
    dropout_ = register_module("dropout", torch::nn::Dropout(config.hidden_dropout_prob));
    if (peft.adapter_bottleneck > 0) {
      attention_adapter_ = attention_output->register_module("adapter", SanBlock(hidden, peft.adapter_bottleneck));
      output_adapter_ = output->register_module("adapter", SanBlock(hidden, peft.adapter_bottleneck));
    }
  }

  torch::Tensor forward(const torch::Tensor& hidden, const torch::Tensor& additive_mask) {
    const auto context = self_attention_->forward(hidden, additive_mask);
    // Houlsby adapters sit after each sublayer's projection and dropout, before the residual.
    auto attention_out = dropout_->forward(Dense(attention_dense_, context));
    if (attention_adapter_) attention_out = attention_adapter_->forward(attention_out);
    const auto attended = attention_norm_->forward(attention_out + hidden);
    const auto inner = Activate(activation_, Dense(intermediate_dense_, attended));
    auto output = dropout_->forward(Dense(output_dense_, inner));
    if (output_adapter_) output = output_adapter_->forward(output);
    return output_norm_->forward(output + attended);
  }

 private:
  HiddenActivation activation_;
  MultiHeadSelfAttention self_attention_{nullptr};
  torch::nn::Linear attention_dense_{nullptr};
  torch::nn::LayerNorm attention_norm_{nullptr};
  torch::nn::Linear intermediate_dense_{nullptr};
  torch::nn::Linear output_dense_{nullptr};
  torch::nn::LayerNorm output_norm_{nullptr};
  torch::nn::Dropout dropout_{nullptr};
  SanBlock attention_adapter_{nullptr};
  SanBlock output_adapter_{nullptr};
};

BertModelImpl::BertModelImpl(const BertConfig& config, const PeftConfig& peft, WeightInit init) : config_(config) {
  config_.Validate("BertConfig");
  const int64_t hidden = config_.hidden_size;
  auto embeddings = RegisterScope(*this, "embeddings");
  word_embeddings_ = embeddings->register_module(
      "word_embeddings",
      torch::nn::Embedding(torch::nn::EmbeddingOptions(config_.vocab_size, hidden).padding_idx(config_.pad_token_id)));
  position_embeddings_ = embeddings->register_module(
      "position_embeddings", torch::nn::Embedding(config_.max_position_embeddings, hidden));
  token_type_embeddings_ =
      embeddings->register_module("token_type_embeddings", torch::nn::Embedding(config_.type_vocab_size, hidden));
  embeddings_norm_ = embeddings->register_module(
      "LayerNorm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({hidden}).eps(config_.layer_norm_eps)));
  embeddings_dropout_ = embeddings->register_module("dropout", torch::nn::Dropout(config_.hidden_dropout_prob));

  auto layer_list = RegisterScope(*this, "encoder")->register_module("layer", torch::nn::ModuleList());
  for (int64_t i = 0; i < config_.num_hidden_layers; ++i) {
    layers_.push_back(std::make_shared<BertLayerImpl>(config_, peft));
    layer_list->push_back(layers_.back());
  }
  // IISAN never uses the pooler; it is built so that parameter names and counts match the
  // checkpoint (109,482,240 for bert-base) and its weights load without special cases.
  RegisterScope(*this, "pooler")->register_module("dense", torch::nn::Linear(hidden, hidden));

  const double std = config_.initializer_range;
  if (init == WeightInit::kRandom) {
    InitializeTransformerWeights(*this, [std](const torch::Tensor& weight) { weight.normal_(0.0, std); });
  }
  // The PEFT additions keep their own init (SANB N(0, 0.01²), LoRA kaiming / zero).
  if (peft.adapter_bottleneck > 0) ResetAdapters(*this);
}

std::vector<torch::Tensor> BertModelImpl::forward(const torch::Tensor& input_ids,
                                                  const torch::Tensor& attention_mask) {
  return Run(input_ids, attention_mask, /*cls_only=*/false);
}

std::vector<torch::Tensor> BertModelImpl::ClsStates(const torch::Tensor& input_ids,
                                                    const torch::Tensor& attention_mask) {
  return Run(input_ids, attention_mask, /*cls_only=*/true);
}

std::vector<torch::Tensor> BertModelImpl::Run(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                                              bool cls_only) {
  if (input_ids.dim() != 2 || input_ids.scalar_type() != torch::kInt64) {
    throw std::runtime_error("BertModel::forward: input_ids must be an int64 tensor [B, T], got " +
                                std::string(c10::toString(input_ids.scalar_type())) + " " +
                                c10::str(input_ids.sizes()));
  }
  if (attention_mask.sizes() != input_ids.sizes()) {
    throw std::runtime_error("BertModel::forward: attention_mask must have input_ids' shape " +
                                c10::str(input_ids.sizes()) + ", got " + c10::str(attention_mask.sizes()));
  }
  const int64_t batch = input_ids.size(0);
  const int64_t length = input_ids.size(1);
  if (length > config_.max_position_embeddings) {
    throw std::runtime_error("BertModel::forward: sequence length " + std::to_string(length) +
                                " exceeds max_position_embeddings " +
                                std::to_string(config_.max_position_embeddings) + "; truncate the input");
  }
  const auto positions = torch::arange(length, input_ids.options()).unsqueeze(0);
  // Summed in Hugging Face's order (word + token type, then position) for identical rounding.
  auto hidden = word_embeddings_->forward(input_ids) + token_type_embeddings_->forward(torch::zeros_like(input_ids));
  hidden = hidden + position_embeddings_->forward(positions);
  hidden = embeddings_dropout_->forward(embeddings_norm_->forward(hidden));

  const auto dtype = hidden.scalar_type();
  const auto keep = attention_mask.to(dtype).view({batch, 1, 1, length});
  const auto additive_mask = (1.0 - keep) * AttentionMaskValue(dtype);

  std::vector<torch::Tensor> states;
  states.reserve(layers_.size() + 1);
  states.push_back(cls_only ? hidden.select(1, 0) : hidden);
  for (const auto& layer : layers_) {
    hidden = layer->forward(hidden, additive_mask);
    states.push_back(cls_only ? hidden.select(1, 0) : hidden);
  }
  return states;
}

}  // namespace iisan::models
