// SASRec user encoder: parameter count and names, initialisation, causal and padding masks,
// and a forward pass checked against IISAN.md §3.4's formulas.
#include "core/models/sasrec.h"

#include <cmath>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/models/param_count.h"
#include "tests/core/models/model_test_util.h"

namespace iisan::models {
namespace {

using testing::ExpectErrorContaining;
using testing::Parameter;
using testing::ParameterNames;

TEST(UserEncoderTest, ParameterCountAndNames) {
  const UserEncoder model(UserEncoderConfig{});
  EXPECT_EQ(CountParameters(*model).trainable, 100'224);
  std::vector<std::string> expected = {"position_embedding.weight", "input_norm.weight", "input_norm.bias"};
  for (const std::string block : {"blocks.0.", "blocks.1."}) {
    for (const char* name :
         {"self_attention.query.weight", "self_attention.key.weight", "self_attention.value.weight",
          "attention_output.weight", "attention_norm.weight", "attention_norm.bias", "ffn_in.weight", "ffn_in.bias",
          "ffn_out.weight", "ffn_out.bias", "ffn_norm.weight", "ffn_norm.bias"}) {
      expected.push_back(block + name);
    }
  }
  EXPECT_EQ(ParameterNames(*model), expected);
  EXPECT_EQ(Parameter(*model, "position_embedding.weight").sizes(), torch::IntArrayRef({10, 64}));
  EXPECT_EQ(Parameter(*model, "blocks.1.ffn_in.weight").sizes(), torch::IntArrayRef({256, 64}));
}

TEST(UserEncoderTest, XavierInitialisation) {
  torch::manual_seed(0);
  const UserEncoder model(UserEncoderConfig{});
  for (const auto& item : model->named_parameters()) {
    const auto& name = item.key();
    const auto& value = item.value();
    if (name.ends_with("norm.weight")) {
      EXPECT_TRUE(torch::equal(value, torch::ones_like(value))) << name;
    } else if (name.ends_with(".bias")) {
      EXPECT_TRUE(torch::equal(value, torch::zeros_like(value))) << name;
    } else {
      const double fan_sum = static_cast<double>(value.size(0) + value.size(1));
      EXPECT_NEAR(value.std().item<double>(), std::sqrt(2.0 / fan_sum), 0.15 * std::sqrt(2.0 / fan_sum)) << name;
    }
  }
}

// IISAN.md §3.4 written out: x = LN(e + P); per block a = LN(x + W_O MHA(x)),
// y = LN(a + W_2 ReLU(W_1 a + b_1) + b_2); eval mode, so no dropout.
torch::Tensor ReferenceUserEncoder(const UserEncoder& model, const torch::Tensor& e, const torch::Tensor& log_mask) {
  const auto& config = model->config();
  auto param = [&](const std::string& name) { return Parameter(*model, name); };
  auto layer_norm = [&](const torch::Tensor& x, const std::string& prefix) {
    return torch::layer_norm(x, {config.embedding_dim}, param(prefix + ".weight"), param(prefix + ".bias"), 1e-6);
  };
  auto project = [&](const torch::Tensor& x, const std::string& name) {
    return torch::matmul(x, param(name + ".weight").t());
  };
  auto x = layer_norm(e + param("position_embedding.weight").slice(0, 0, e.size(1)), "input_norm");
  for (int64_t b = 0; b < config.num_blocks; ++b) {
    const std::string prefix = "blocks." + std::to_string(b) + ".";
    const auto context = testing::ReferenceAttention(
        project(x, prefix + "self_attention.query"), project(x, prefix + "self_attention.key"),
        project(x, prefix + "self_attention.value"), config.num_heads, log_mask, /*causal=*/true);
    const auto a = layer_norm(x + project(context, prefix + "attention_output"), prefix + "attention_norm");
    const auto inner = torch::relu(project(a, prefix + "ffn_in") + param(prefix + "ffn_in.bias"));
    x = layer_norm(a + project(inner, prefix + "ffn_out") + param(prefix + "ffn_out.bias"), prefix + "ffn_norm");
  }
  return x;
}

TEST(UserEncoderTest, MatchesFormulaReferenceOnRealPositions) {
  torch::manual_seed(1);
  UserEncoder model(UserEncoderConfig{});
  testing::RandomizeParameters(*model);
  model->eval();
  torch::NoGradGuard no_grad;
  const auto e = torch::randn({3, 10, 64});
  auto log_mask = torch::ones({3, 10});
  log_mask[1].slice(0, 0, 4).zero_();
  log_mask[2].slice(0, 0, 9).zero_();
  const auto out = model->forward(e, log_mask);
  EXPECT_EQ(out.sizes(), torch::IntArrayRef({3, 10, 64}));
  // Fully masked (padding) query rows differ by design: the reference gives them a zero
  // context, the model's additive -1e9 a uniform one. Only real positions are compared.
  const auto real = (log_mask != 0).unsqueeze(2).expand_as(out);
  const auto expected = ReferenceUserEncoder(model, e, log_mask);
  EXPECT_TRUE(torch::allclose(out.masked_select(real), expected.masked_select(real), 1e-4, 1e-5));
  EXPECT_TRUE(torch::isfinite(out).all().item<bool>());
}

TEST(UserEncoderTest, OutputDoesNotDependOnLaterPositions) {
  UserEncoder model(UserEncoderConfig{});
  model->eval();
  torch::NoGradGuard no_grad;
  const auto e = torch::randn({2, 10, 64});
  const auto log_mask = torch::ones({2, 10});
  const auto base = model->forward(e, log_mask);
  for (int64_t i = 0; i < 9; ++i) {
    auto changed = e.clone();
    changed.slice(1, i + 1) += torch::randn({2, 9 - i, 64});
    const auto out = model->forward(changed, log_mask);
    EXPECT_TRUE(torch::allclose(out.slice(1, 0, i + 1), base.slice(1, 0, i + 1), 0, 1e-6)) << "position " << i;
    EXPECT_FALSE(torch::allclose(out.slice(1, i + 1), base.slice(1, i + 1))) << "position " << i;
  }
}

TEST(UserEncoderTest, PaddedPositionsAreInvisible) {
  UserEncoder model(UserEncoderConfig{});
  model->eval();
  torch::NoGradGuard no_grad;
  const auto e = torch::randn({2, 10, 64});
  auto log_mask = torch::ones({2, 10});
  log_mask[0].slice(0, 0, 6).zero_();
  log_mask[1].slice(0, 0, 2).zero_();
  const auto base = model->forward(e, log_mask);
  const auto changed = e + (log_mask == 0).unsqueeze(2) * torch::randn({2, 10, 64});
  const auto out = model->forward(changed, log_mask);
  const auto real = (log_mask != 0).unsqueeze(2).expand_as(out);
  EXPECT_TRUE(torch::allclose(out.masked_select(real), base.masked_select(real), 0, 1e-6));
}

TEST(UserEncoderTest, ShorterSequencesAndDropout) {
  UserEncoder model(UserEncoderConfig{});
  const auto e = torch::randn({2, 4, 64});
  const auto log_mask = torch::ones({2, 4});
  EXPECT_EQ(model->forward(e, log_mask).sizes(), torch::IntArrayRef({2, 4, 64}));
  EXPECT_FALSE(torch::equal(model->forward(e, log_mask), model->forward(e, log_mask)));
  model->eval();
  EXPECT_TRUE(torch::equal(model->forward(e, log_mask), model->forward(e, log_mask)));
}

TEST(UserEncoderTest, RejectsBadShapesAndConfigs) {
  UserEncoder model(UserEncoderConfig{});
  ExpectErrorContaining([&] { model->forward(torch::randn({2, 11, 64}), torch::ones({2, 11})); },
                        {"item_embeddings", "L <= 10", "[2, 11, 64]"});
  ExpectErrorContaining([&] { model->forward(torch::randn({2, 10, 64}), torch::ones({2, 9})); }, {"log_mask"});
  UserEncoderConfig bad;
  bad.num_heads = 3;
  ExpectErrorContaining([&] { UserEncoder{bad}; }, {"UserEncoderConfig", "num_heads"});
}

}  // namespace
}  // namespace iisan::models
