// ViTModel: Hugging Face parameter names and counts, hidden states, dropout, and a forward
// pass checked against a formula-by-formula reference.
#include "core/models/vit.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/models/param_count.h"
#include "tests/core/models/model_test_util.h"

namespace iisan::models {
namespace {

using testing::ExpectErrorContaining;
using testing::Parameter;
using testing::TinyBertConfig;
using testing::TinyViTConfig;
using testing::ParameterNames;

TEST(ViTModelTest, ParameterNamesMatchHuggingFace) {
  const ViTModel model(TinyViTConfig());
  std::vector<std::string> expected = {
      "embeddings.cls_token",
      "embeddings.position_embeddings",
      "embeddings.patch_embeddings.projection.weight",
      "embeddings.patch_embeddings.projection.bias",
  };
  for (const std::string layer : {"encoder.layer.0.", "encoder.layer.1."}) {
    for (const char* name : {"attention.attention.query.weight", "attention.attention.query.bias",
                             "attention.attention.key.weight", "attention.attention.key.bias",
                             "attention.attention.value.weight", "attention.attention.value.bias",
                             "attention.output.dense.weight", "attention.output.dense.bias",
                             "intermediate.dense.weight", "intermediate.dense.bias",
                             "output.dense.weight", "output.dense.bias",
                             "layernorm_before.weight", "layernorm_before.bias",
                             "layernorm_after.weight", "layernorm_after.bias"}) {
      expected.push_back(layer + name);
    }
  }
  expected.push_back("layernorm.weight");
  expected.push_back("layernorm.bias");
  EXPECT_EQ(ParameterNames(*model), expected);

  EXPECT_EQ(Parameter(*model, "embeddings.cls_token").sizes(), torch::IntArrayRef({1, 1, 16}));
  EXPECT_EQ(Parameter(*model, "embeddings.position_embeddings").sizes(), torch::IntArrayRef({1, 5, 16}));
  EXPECT_EQ(Parameter(*model, "embeddings.patch_embeddings.projection.weight").sizes(),
            torch::IntArrayRef({16, 3, 4, 4}));
}

TEST(ViTModelTest, QkvBiasCanBeOff) {
  auto config = TinyViTConfig();
  config.qkv_bias = false;
  const ViTModel model(config);
  const auto names = ParameterNames(*model);
  EXPECT_EQ(std::count(names.begin(), names.end(), "encoder.layer.0.attention.attention.query.bias"), 0);
  EXPECT_EQ(names.size(), 4u + 2 * (16 - 3) + 2);
}

TEST(ViTModelTest, VitBaseParameterCount) {
  const ViTModel model(ViTConfig{});
  EXPECT_EQ(CountParameters(*model).total(), 85'798'656);
}

TEST(ViTModelTest, InitialisesLikeHuggingFace) {
  torch::manual_seed(0);
  const ViTModel model(TinyViTConfig());
  for (const auto& item : model->named_parameters()) {
    const auto& name = item.key();
    const auto& value = item.value();
    if (name.find("layernorm") != std::string::npos && name.ends_with(".weight")) {
      EXPECT_TRUE(torch::equal(value, torch::ones_like(value))) << name;
    } else if (name.ends_with(".bias")) {
      EXPECT_TRUE(torch::equal(value, torch::zeros_like(value))) << name;
    } else {
      EXPECT_LE(value.abs().max().item<double>(), 2.0) << name << " is truncated at +-2";
    }
  }
  EXPECT_NEAR(Parameter(*model, "encoder.layer.0.intermediate.dense.weight").std().item<double>(), 0.02, 0.003);
  EXPECT_GT(Parameter(*model, "embeddings.position_embeddings").abs().sum().item<double>(), 0.0);
  EXPECT_GT(Parameter(*model, "embeddings.cls_token").abs().sum().item<double>(), 0.0);
}

TEST(ViTModelTest, ReturnsEveryHiddenStateBeforeTheFinalLayerNorm) {
  ViTModel model(TinyViTConfig());
  const auto states = model->forward(torch::randn({3, 3, 8, 8}));
  ASSERT_EQ(states.size(), 3u);
  for (const auto& state : states) EXPECT_EQ(state.sizes(), torch::IntArrayRef({3, 5, 16}));
  const auto normed = model->ApplyFinalLayerNorm(states.back());
  EXPECT_EQ(normed.sizes(), states.back().sizes());
  EXPECT_FALSE(torch::allclose(normed, states.back()));
}

// Hugging Face's ViTModel written out formula by formula, reading parameters by name.
std::vector<torch::Tensor> ReferenceViT(const ViTModel& model, const torch::Tensor& pixels) {
  const auto& config = model->config();
  const int64_t hidden = config.hidden_size;
  const int64_t patch = config.patch_size;
  const int64_t side = config.image_size / patch;
  auto param = [&](const std::string& name) { return Parameter(*model, name); };
  auto linear = [&](const torch::Tensor& x, const std::string& prefix) {
    return torch::matmul(x, param(prefix + ".weight").t()) + param(prefix + ".bias");
  };
  auto layer_norm = [&](const torch::Tensor& x, const std::string& prefix) {
    return torch::layer_norm(x, {hidden}, param(prefix + ".weight"), param(prefix + ".bias"), config.layer_norm_eps);
  };
  const int64_t batch = pixels.size(0);
  // Patches in row-major order, each one a dot product with the flattened kernel.
  const auto kernel = param("embeddings.patch_embeddings.projection.weight").reshape({hidden, -1});
  std::vector<torch::Tensor> tokens = {param("embeddings.cls_token").expand({batch, 1, hidden})};
  for (int64_t row = 0; row < side; ++row) {
    for (int64_t col = 0; col < side; ++col) {
      const auto window = pixels.slice(2, row * patch, (row + 1) * patch).slice(3, col * patch, (col + 1) * patch);
      tokens.push_back((torch::matmul(window.reshape({batch, -1}), kernel.t()) +
                        param("embeddings.patch_embeddings.projection.bias"))
                           .unsqueeze(1));
    }
  }
  auto h = torch::cat(tokens, 1) + param("embeddings.position_embeddings");
  std::vector<torch::Tensor> states = {h};
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    const std::string prefix = "encoder.layer." + std::to_string(l) + ".";
    const auto x = layer_norm(h, prefix + "layernorm_before");
    const auto context = testing::ReferenceAttention(linear(x, prefix + "attention.attention.query"),
                                                     linear(x, prefix + "attention.attention.key"),
                                                     linear(x, prefix + "attention.attention.value"),
                                                     config.num_attention_heads, torch::Tensor());
    const auto attended = linear(context, prefix + "attention.output.dense") + h;
    const auto inner = testing::ReferenceGelu(linear(layer_norm(attended, prefix + "layernorm_after"),
                                                     prefix + "intermediate.dense"));
    h = linear(inner, prefix + "output.dense") + attended;
    states.push_back(h);
  }
  states.push_back(layer_norm(h, "layernorm"));
  return states;
}

TEST(ViTModelTest, MatchesFormulaReference) {
  ViTModel model(TinyViTConfig());
  testing::RandomizeParameters(*model);
  model->eval();
  torch::NoGradGuard no_grad;
  const auto pixels = torch::rand({2, 3, 8, 8}) * 2 - 1;
  auto states = model->forward(pixels);
  states.push_back(model->ApplyFinalLayerNorm(states.back()));
  const auto expected = ReferenceViT(model, pixels);
  ASSERT_EQ(states.size(), expected.size());
  for (size_t i = 0; i < states.size(); ++i) {
    EXPECT_TRUE(torch::allclose(states[i], expected[i], 1e-5, 1e-5)) << "state " << i;
  }
}

TEST(ViTModelTest, DropoutOnlyInTrainMode) {
  auto config = TinyViTConfig();
  config.hidden_dropout_prob = 0.1;
  config.attention_probs_dropout_prob = 0.1;
  ViTModel model(config);
  const auto pixels = torch::randn({2, 3, 8, 8});
  model->eval();
  EXPECT_TRUE(torch::equal(model->forward(pixels).back(), model->forward(pixels).back()));
  model->train();
  EXPECT_FALSE(torch::equal(model->forward(pixels).back(), model->forward(pixels).back()));
}

TEST(ViTModelTest, RejectsWrongImageShapes) {
  ViTModel model(TinyViTConfig());
  ExpectErrorContaining([&] { model->forward(torch::randn({2, 3, 16, 16})); }, {"pixel_values", "[B, 3, 8, 8]"});
  ExpectErrorContaining([&] { model->forward(torch::randn({2, 1, 8, 8})); }, {"pixel_values"});
  ExpectErrorContaining([&] { model->forward(torch::ones({2, 3, 8, 8}, torch::kInt64)); }, {"floating"});
}

}  // namespace
}  // namespace iisan::models
