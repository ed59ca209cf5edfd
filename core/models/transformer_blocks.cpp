// Activations, multi-head self-attention and weight initialisation for the encoders.
#include "core/models/transformer_blocks.h"

#include <cmath>
#include <limits>
#include <optional>
#include <stdexcept>

#include <torch/torch.h>
#include <torch/version.h>

namespace iisan::models {

torch::Tensor Activate(HiddenActivation activation, const torch::Tensor& x) {
  switch (activation) {
    case HiddenActivation::kGelu:
      return torch::gelu(x);
    case HiddenActivation::kGeluTanh:
      return torch::gelu(x, "tanh");
    case HiddenActivation::kRelu:
      return torch::relu(x);
    case HiddenActivation::kSilu:
      return torch::silu(x);
  }
  throw std::logic_error("Activate: unhandled HiddenActivation value");
}

torch::Tensor Dense(const torch::nn::Linear& layer, const torch::Tensor& x) {
  return at::linear(x, layer->weight, layer->bias);
}

MultiHeadSelfAttentionImpl::MultiHeadSelfAttentionImpl(int64_t hidden_size, int64_t num_heads, bool bias,
                                                       double probs_dropout, int64_t lora_rank, double lora_alpha)
    : num_heads_(num_heads), head_dim_(hidden_size / num_heads) {
  if (num_heads <= 0 || hidden_size % num_heads != 0) {
    throw std::runtime_error("MultiHeadSelfAttention: hidden size " + std::to_string(hidden_size) +
                                " must be a positive multiple of the head count " + std::to_string(num_heads));
  }
  if (lora_rank < 0) throw std::runtime_error("MultiHeadSelfAttention: lora_rank must be >= 0");
  const auto projection = torch::nn::LinearOptions(hidden_size, hidden_size).bias(bias);
  query_ = register_module("query", torch::nn::Linear(projection));
  key_ = register_module("key", torch::nn::Linear(projection));
  value_ = register_module("value", torch::nn::Linear(projection));
  probs_dropout_ = register_module("dropout", torch::nn::Dropout(probs_dropout));
  if (lora_rank > 0) {
    lora_scaling_ = lora_alpha / static_cast<double>(lora_rank);
    auto add_lora = [&](torch::nn::Linear& target, torch::Tensor& a, torch::Tensor& b) {
      a = target->register_parameter("lora_A", torch::empty({lora_rank, hidden_size}));
      b = target->register_parameter("lora_B", torch::zeros({hidden_size, lora_rank}));
      torch::NoGradGuard no_grad;
      torch::nn::init::kaiming_uniform_(a, std::sqrt(5.0));
    };
    add_lora(query_, query_lora_a_, query_lora_b_);
    add_lora(value_, value_lora_a_, value_lora_b_);
  }
}

torch::Tensor MultiHeadSelfAttentionImpl::Project(torch::nn::Linear& projection, const torch::Tensor& lora_a,
                                                  const torch::Tensor& lora_b, const torch::Tensor& hidden) {
  auto out = Dense(projection, hidden);
  if (!lora_a.defined()) return out;
  namespace F = torch::nn::functional;
  return out + F::linear(F::linear(hidden, lora_a), lora_b) * lora_scaling_;
}

torch::Tensor MultiHeadSelfAttentionImpl::forward(const torch::Tensor& hidden, const torch::Tensor& additive_mask) {
  const int64_t batch = hidden.size(0);
  const int64_t length = hidden.size(1);
  auto split_heads = [&](const torch::Tensor& x) {
    return x.view({batch, length, num_heads_, head_dim_}).transpose(1, 2);
  };
  const auto query = split_heads(Project(query_, query_lora_a_, query_lora_b_, hidden));
  const auto key = split_heads(Dense(key_, hidden));
  const auto value = split_heads(Project(value_, value_lora_a_, value_lora_b_, hidden));
#if TORCH_VERSION_MAJOR >= 2
  std::optional<torch::Tensor> mask;
  if (additive_mask.defined()) mask = additive_mask.to(query.scalar_type());
  const double dropout = is_training() ? probs_dropout_->options.p() : 0.0;
  const auto context = at::scaled_dot_product_attention(query, key, value, mask, dropout);
#else
  auto scores = torch::matmul(query, key.transpose(-1, -2)) / std::sqrt(static_cast<double>(head_dim_));
  if (additive_mask.defined()) scores = scores + additive_mask;
  // A mask kept in fp32 promotes half-precision scores; the softmax runs in that wider type
  // and the probabilities go back to the values' type for the product.
  const auto probs = probs_dropout_->forward(torch::softmax(scores, -1).to(value.scalar_type()));
  const auto context = torch::matmul(probs, value);
#endif
  return context.transpose(1, 2).reshape({batch, length, num_heads_ * head_dim_});
}

double AttentionMaskValue(torch::ScalarType dtype) {
  double lowest = 0;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "AttentionMaskValue", [&] {
    lowest = static_cast<double>(std::numeric_limits<scalar_t>::lowest());
  });
  return std::max(lowest, -1e30);
}

std::shared_ptr<torch::nn::Module> RegisterScope(torch::nn::Module& parent, const std::string& name) {
  return parent.register_module(name, std::make_shared<torch::nn::Module>());
}

void InitializeTransformerWeights(torch::nn::Module& root,
                                  const std::function<void(const torch::Tensor&)>& init_weight) {
  torch::NoGradGuard no_grad;
  root.apply([&](torch::nn::Module& module) {
    if (auto* linear = dynamic_cast<torch::nn::LinearImpl*>(&module)) {
      init_weight(linear->weight);
      if (linear->bias.defined()) linear->bias.zero_();
    } else if (auto* conv = dynamic_cast<torch::nn::Conv2dImpl*>(&module)) {
      init_weight(conv->weight);
      if (conv->bias.defined()) conv->bias.zero_();
    } else if (auto* embedding = dynamic_cast<torch::nn::EmbeddingImpl*>(&module)) {
      init_weight(embedding->weight);
      if (const auto padding = embedding->options.padding_idx()) embedding->weight[*padding].zero_();
    } else if (auto* norm = dynamic_cast<torch::nn::LayerNormImpl*>(&module)) {
      norm->weight.fill_(1.0);
      norm->bias.zero_();
    }
  });
}

void FillTruncatedNormal(const torch::Tensor& tensor, double std) {
  // Inverse-CDF sampling, as torch.nn.init.trunc_normal_: uniform over the CDF values of the
  // bounds, mapped back through the inverse error function.
  constexpr double kBound = 2.0;
  auto normal_cdf = [](double x) { return 0.5 * (1.0 + std::erf(x / std::sqrt(2.0))); };
  const double lower = normal_cdf(-kBound / std);
  const double upper = normal_cdf(kBound / std);
  torch::NoGradGuard no_grad;
  tensor.uniform_(2 * lower - 1, 2 * upper - 1);
  tensor.erfinv_();
  tensor.mul_(std * std::sqrt(2.0));
  tensor.clamp_(-kBound, kBound);
}

}  // namespace iisan::models
