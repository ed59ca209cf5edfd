// Helpers shared by the models tests: parameter listings and error-message checks.
#pragma once

#include <filesystem>
#include <cmath>
#include <functional>
#include <initializer_list>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/models/backbone_config.h"

namespace iisan::models::testing {

// A two-layer BERT of width 16 (vocabulary 50, 20 positions) and a two-layer ViT of width 16
// on 8x8 images in 4x4 patches: the tiny backbones of the model and trainer tests.
inline BertConfig TinyBertConfig() {
  BertConfig config;
  config.vocab_size = 50;
  config.hidden_size = 16;
  config.num_hidden_layers = 2;
  config.num_attention_heads = 2;
  config.intermediate_size = 32;
  config.max_position_embeddings = 20;
  return config;
}

inline ViTConfig TinyViTConfig() {
  ViTConfig config;
  config.hidden_size = 16;
  config.num_hidden_layers = 2;
  config.num_attention_heads = 2;
  config.intermediate_size = 32;
  config.image_size = 8;
  config.patch_size = 4;
  return config;
}

// named_parameters() keys in registration order.
inline std::vector<std::string> ParameterNames(const torch::nn::Module& module) {
  std::vector<std::string> names;
  for (const auto& item : module.named_parameters()) names.push_back(item.key());
  return names;
}

inline torch::Tensor Parameter(const torch::nn::Module& module, const std::string& name) {
  const auto parameters = module.named_parameters();
  const auto* found = parameters.find(name);
  if (found == nullptr) throw std::out_of_range("no parameter named " + name);
  return *found;
}

// Runs `body`, expects a std::exception whose message contains every fragment.
inline void ExpectErrorContaining(const std::function<void()>& body, std::initializer_list<std::string> fragments) {
  try {
    body();
  } catch (const std::exception& e) {
    const std::string message = e.what();
    for (const auto& fragment : fragments) {
      EXPECT_NE(message.find(fragment), std::string::npos) << "missing '" << fragment << "' in: " << message;
    }
    return;
  }
  ADD_FAILURE() << "expected an exception";
}

// Overwrites every parameter with U(-0.5, 0.5), so that a reference computation that reads
// parameters by name would notice two of them being swapped or ignored.
inline void RandomizeParameters(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto& parameter : module.parameters()) parameter.uniform_(-0.5, 0.5);
}

// Multi-head attention written head by head. q, k, v: [B, T, H]; key_keep: [B, T] (1 =
// visible to every query) or undefined; causal hides keys after the query.
inline torch::Tensor ReferenceAttention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                        int64_t heads, const torch::Tensor& key_keep, bool causal = false) {
  const int64_t length = q.size(1);
  const int64_t head_dim = q.size(2) / heads;
  std::vector<torch::Tensor> contexts;
  for (int64_t head = 0; head < heads; ++head) {
    const auto slice = [&](const torch::Tensor& x) { return x.slice(2, head * head_dim, (head + 1) * head_dim); };
    auto scores = torch::matmul(slice(q), slice(k).transpose(1, 2)) / std::sqrt(static_cast<double>(head_dim));
    auto hidden = torch::zeros_like(scores, torch::kBool);
    if (key_keep.defined()) hidden = hidden.logical_or((key_keep == 0).unsqueeze(1));
    if (causal) hidden = hidden.logical_or(torch::ones({length, length}, torch::kBool).triu(1).unsqueeze(0));
    scores = scores.masked_fill(hidden, -std::numeric_limits<double>::infinity());
    // A fully hidden row (a padding query) gets a zero context instead of NaN.
    contexts.push_back(torch::matmul(torch::nan_to_num(torch::softmax(scores, -1), 0.0), slice(v)));
  }
  return torch::cat(contexts, 2);
}

inline torch::Tensor ReferenceGelu(const torch::Tensor& x) { return 0.5 * x * (1 + torch::erf(x / std::sqrt(2.0))); }

// The shared data folder next to the repository (configs of the real backbones), if present.
inline std::filesystem::path SharedDataDir() { return std::filesystem::path(IISAN_SOURCE_DIR "/../shared/data"); }

}  // namespace iisan::models::testing
