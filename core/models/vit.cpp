// ViT encoder: patch and position embeddings, pre-LayerNorm transformer layers, final LayerNorm.
#include "core/models/vit.h"

#include <stdexcept>

#include <torch/torch.h>

#include "core/models/iisan.h"
#include "core/models/transformer_blocks.h"

namespace iisan::models {

// One pre-LayerNorm layer: attention.{attention,output}, intermediate, output,
// layernorm_before, layernorm_after (Hugging Face's registration order).
class ViTLayerImpl : public torch::nn::Module {
 public:
  ViTLayerImpl(const ViTConfig& config, const PeftConfig& peft) : activation_(config.hidden_act) {
    const int64_t hidden = config.hidden_size;
    const auto norm = torch::nn::LayerNormOptions({hidden}).eps(config.layer_norm_eps);
    auto attention = RegisterScope(*this, "attention");
    self_attention_ = attention->register_module(
        "attention", MultiHeadSelfAttention(hidden, config.num_attention_heads, config.qkv_bias,
                                            config.attention_probs_dropout_prob, peft.lora_rank, peft.lora_alpha));
    auto attention_output = RegisterScope(*attention, "output");
    attention_dense_ = attention_output->register_module("dense", torch::nn::Linear(hidden, hidden));
    intermediate_dense_ = RegisterScope(*this, "intermediate")
                              ->register_module("dense", torch::nn::Linear(hidden, config.intermediate_size));
    auto output = RegisterScope(*this, "output");
    output_dense_ = output->register_module("dense", torch::nn::Linear(config.intermediate_size, hidden));
    layernorm_before_ = register_module("layernorm_before", torch::nn::LayerNorm(norm));
    layernorm_after_ = register_module("layernorm_after", torch::nn::LayerNorm(norm));
    dropout_ = register_module("dropout", torch::nn::Dropout(config.hidden_dropout_prob));
    if (peft.adapter_bottleneck > 0) {
      attention_adapter_ = attention_output->register_module("adapter", SanBlock(hidden, peft.adapter_bottleneck));
      output_adapter_ = output->register_module("adapter", SanBlock(hidden, peft.adapter_bottleneck));
    }
  }

  torch::Tensor forward(const torch::Tensor& hidden) {
    const auto context = self_attention_->forward(layernorm_before_->forward(hidden));
    // Houlsby adapters sit after each sublayer's projection and dropout, before the residual.
    auto attention_out = dropout_->forward(Dense(attention_dense_, context));
    if (attention_adapter_) attention_out = attention_adapter_->forward(attention_out);
    const auto attended = attention_out + hidden;
    const auto inner = Activate(activation_, Dense(intermediate_dense_, layernorm_after_->forward(attended)));
    auto output = dropout_->forward(Dense(output_dense_, inner));
    if (output_adapter_) output = output_adapter_->forward(output);
    return output + attended;
  }

 private:
  HiddenActivation activation_;
  MultiHeadSelfAttention self_attention_{nullptr};
  torch::nn::Linear attention_dense_{nullptr};
  torch::nn::Linear intermediate_dense_{nullptr};
  torch::nn::Linear output_dense_{nullptr};
  torch::nn::LayerNorm layernorm_before_{nullptr};
  torch::nn::LayerNorm layernorm_after_{nullptr};
  torch::nn::Dropout dropout_{nullptr};
  SanBlock attention_adapter_{nullptr};
  SanBlock output_adapter_{nullptr};
};

ViTModelImpl::ViTModelImpl(const ViTConfig& config, const PeftConfig& peft, WeightInit init) : config_(config) {
  config_.Validate("ViTConfig");
  const int64_t hidden = config_.hidden_size;
  auto embeddings = RegisterScope(*this, "embeddings");
  cls_token_ = embeddings->register_parameter("cls_token", torch::empty({1, 1, hidden}));
  position_embeddings_ =
      embeddings->register_parameter("position_embeddings", torch::empty({1, config_.num_patches() + 1, hidden}));
  // Kernel = stride = patch: one output position per non-overlapping patch.
  const auto patchify = torch::nn::Conv2dOptions(config_.num_channels, hidden, config_.patch_size)
                            .stride(config_.patch_size);
  projection_ =
      RegisterScope(*embeddings, "patch_embeddings")->register_module("projection", torch::nn::Conv2d(patchify));
  embeddings_dropout_ = embeddings->register_module("dropout", torch::nn::Dropout(config_.hidden_dropout_prob));

  auto layer_list = RegisterScope(*this, "encoder")->register_module("layer", torch::nn::ModuleList());
  for (int64_t i = 0; i < config_.num_hidden_layers; ++i) {
    layers_.push_back(std::make_shared<ViTLayerImpl>(config_, peft));
    layer_list->push_back(layers_.back());
  }
  layernorm_ = register_module(
      "layernorm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({hidden}).eps(config_.layer_norm_eps)));

  const double std = config_.initializer_range;
  auto truncated_normal = [std](const torch::Tensor& weight) { FillTruncatedNormal(weight, std); };
  if (init == WeightInit::kRandom) {
    InitializeTransformerWeights(*this, truncated_normal);
    truncated_normal(cls_token_);
    truncated_normal(position_embeddings_);
  } else {
    torch::NoGradGuard no_grad;
    cls_token_.zero_();  // made with torch::empty: never left undefined
    position_embeddings_.zero_();
  }
  // The PEFT additions keep their own init (SANB N(0, 0.01²), LoRA kaiming / zero).
  if (peft.adapter_bottleneck > 0) ResetAdapters(*this);
}

std::vector<torch::Tensor> ViTModelImpl::forward(const torch::Tensor& pixel_values) {
  return Run(pixel_values, /*cls_only=*/false);
}

std::vector<torch::Tensor> ViTModelImpl::ClsStates(const torch::Tensor& pixel_values) {
  return Run(pixel_values, /*cls_only=*/true);
}

std::vector<torch::Tensor> ViTModelImpl::Run(const torch::Tensor& pixel_values, bool cls_only) {
  const int64_t side = config_.image_size;
  if (pixel_values.dim() != 4 || pixel_values.size(1) != config_.num_channels || pixel_values.size(2) != side ||
      pixel_values.size(3) != side || !pixel_values.is_floating_point()) {
    throw std::runtime_error("ViTModel::forward: pixel_values must be a floating tensor [B, " +
                                std::to_string(config_.num_channels) + ", " + std::to_string(side) + ", " +
                                std::to_string(side) + "], got " +
                                std::string(c10::toString(pixel_values.scalar_type())) + " " +
                                c10::str(pixel_values.sizes()) + "; resize images to the config's image_size");
  }
  const int64_t batch = pixel_values.size(0);
  const auto pixels = pixel_values.to(projection_->weight.scalar_type());
  const auto patches = projection_->forward(pixels).flatten(2).transpose(1, 2);
  auto hidden = torch::cat({cls_token_.expand({batch, -1, -1}), patches}, 1) + position_embeddings_;
  hidden = embeddings_dropout_->forward(hidden);

  std::vector<torch::Tensor> states;
  states.reserve(layers_.size() + 1);
  states.push_back(cls_only ? hidden.select(1, 0) : hidden);
  for (const auto& layer : layers_) {
    hidden = layer->forward(hidden);
    states.push_back(cls_only ? hidden.select(1, 0) : hidden);
  }
  return states;
}

torch::Tensor ViTModelImpl::ApplyFinalLayerNorm(const torch::Tensor& hidden) { return layernorm_->forward(hidden); }

}  // namespace iisan::models
