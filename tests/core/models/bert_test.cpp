// BertModel: Hugging Face parameter names and counts, hidden states, masking, dropout, and a
// forward pass checked against a formula-by-formula reference.
#include "core/models/bert.h"

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

TEST(BertModelTest, ParameterNamesMatchHuggingFace) {
  const BertModel model(TinyBertConfig());
  std::vector<std::string> expected = {
      "embeddings.word_embeddings.weight",
      "embeddings.position_embeddings.weight",
      "embeddings.token_type_embeddings.weight",
      "embeddings.LayerNorm.weight",
      "embeddings.LayerNorm.bias",
  };
  for (const std::string layer : {"encoder.layer.0.", "encoder.layer.1."}) {
    for (const char* name : {"attention.self.query.weight", "attention.self.query.bias",
                             "attention.self.key.weight", "attention.self.key.bias",
                             "attention.self.value.weight", "attention.self.value.bias",
                             "attention.output.dense.weight", "attention.output.dense.bias",
                             "attention.output.LayerNorm.weight", "attention.output.LayerNorm.bias",
                             "intermediate.dense.weight", "intermediate.dense.bias",
                             "output.dense.weight", "output.dense.bias",
                             "output.LayerNorm.weight", "output.LayerNorm.bias"}) {
      expected.push_back(layer + name);
    }
  }
  expected.push_back("pooler.dense.weight");
  expected.push_back("pooler.dense.bias");
  EXPECT_EQ(ParameterNames(*model), expected);

  EXPECT_EQ(Parameter(*model, "embeddings.word_embeddings.weight").sizes(), torch::IntArrayRef({50, 16}));
  EXPECT_EQ(Parameter(*model, "embeddings.position_embeddings.weight").sizes(), torch::IntArrayRef({20, 16}));
  EXPECT_EQ(Parameter(*model, "embeddings.token_type_embeddings.weight").sizes(), torch::IntArrayRef({2, 16}));
  EXPECT_EQ(Parameter(*model, "encoder.layer.1.intermediate.dense.weight").sizes(), torch::IntArrayRef({32, 16}));
  EXPECT_EQ(Parameter(*model, "encoder.layer.1.output.dense.weight").sizes(), torch::IntArrayRef({16, 32}));
}

TEST(BertModelTest, BertBaseParameterCounts) {
  const BertModel model(BertConfig{});
  EXPECT_EQ(CountParameters(*model).total(), 109'482'240);
  int64_t without_pooler = 0;
  for (const auto& item : model->named_parameters()) {
    if (item.key().rfind("pooler.", 0) != 0) without_pooler += item.value().numel();
  }
  EXPECT_EQ(without_pooler, 108'891'648);
}

TEST(BertModelTest, InitialisesLikeHuggingFace) {
  const BertModel model(TinyBertConfig());
  torch::NoGradGuard no_grad;
  for (const auto& item : model->named_parameters()) {
    const auto& name = item.key();
    const auto& value = item.value();
    if (name.find("LayerNorm.weight") != std::string::npos) {
      EXPECT_TRUE(torch::equal(value, torch::ones_like(value))) << name;
    } else if (name.ends_with(".bias")) {
      EXPECT_TRUE(torch::equal(value, torch::zeros_like(value))) << name;
    }
  }
  const auto words = Parameter(*model, "embeddings.word_embeddings.weight");
  EXPECT_TRUE(torch::equal(words[0], torch::zeros({16}))) << "the pad_token_id row starts at zero";
  const double std = Parameter(*model, "encoder.layer.0.intermediate.dense.weight").std().item<double>();
  EXPECT_NEAR(std, 0.02, 0.003);
}

TEST(BertModelTest, ReturnsEveryHiddenState) {
  BertModel model(TinyBertConfig());
  const auto ids = torch::randint(1, 50, {3, 7}, torch::kInt64);
  const auto states = model->forward(ids, torch::ones({3, 7}, torch::kInt64));
  ASSERT_EQ(states.size(), 3u);
  for (const auto& state : states) EXPECT_EQ(state.sizes(), torch::IntArrayRef({3, 7, 16}));
}

// Hugging Face's BertModel written out formula by formula, reading parameters by name.
std::vector<torch::Tensor> ReferenceBert(const BertModel& model, const torch::Tensor& ids, const torch::Tensor& mask) {
  const auto& config = model->config();
  const int64_t hidden = config.hidden_size;
  auto param = [&](const std::string& name) { return Parameter(*model, name); };
  auto linear = [&](const torch::Tensor& x, const std::string& prefix) {
    return torch::matmul(x, param(prefix + ".weight").t()) + param(prefix + ".bias");
  };
  auto layer_norm = [&](const torch::Tensor& x, const std::string& prefix) {
    return torch::layer_norm(x, {hidden}, param(prefix + ".weight"), param(prefix + ".bias"), config.layer_norm_eps);
  };
  const int64_t length = ids.size(1);
  auto h = param("embeddings.word_embeddings.weight").index_select(0, ids.reshape({-1})).view({-1, length, hidden}) +
           param("embeddings.token_type_embeddings.weight")[0] +
           param("embeddings.position_embeddings.weight").slice(0, 0, length);
  h = layer_norm(h, "embeddings.LayerNorm");
  std::vector<torch::Tensor> states = {h};
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    const std::string prefix = "encoder.layer." + std::to_string(l) + ".";
    const auto context = testing::ReferenceAttention(linear(h, prefix + "attention.self.query"),
                                                     linear(h, prefix + "attention.self.key"),
                                                     linear(h, prefix + "attention.self.value"),
                                                     config.num_attention_heads, mask);
    const auto attended =
        layer_norm(linear(context, prefix + "attention.output.dense") + h, prefix + "attention.output.LayerNorm");
    const auto inner = testing::ReferenceGelu(linear(attended, prefix + "intermediate.dense"));
    h = layer_norm(linear(inner, prefix + "output.dense") + attended, prefix + "output.LayerNorm");
    states.push_back(h);
  }
  return states;
}

TEST(BertModelTest, MatchesFormulaReference) {
  BertModel model(TinyBertConfig());
  testing::RandomizeParameters(*model);
  model->eval();
  torch::NoGradGuard no_grad;
  const auto ids = torch::randint(1, 50, {2, 6}, torch::kInt64);
  const auto mask = torch::tensor({{1, 1, 1, 1, 1, 1}, {1, 1, 1, 1, 0, 0}}, torch::kInt64);
  const auto states = model->forward(ids, mask);
  const auto expected = ReferenceBert(model, ids, mask);
  ASSERT_EQ(states.size(), expected.size());
  for (size_t i = 0; i < states.size(); ++i) {
    EXPECT_TRUE(torch::allclose(states[i], expected[i], 1e-5, 1e-5)) << "hidden state " << i;
  }
}

TEST(BertModelTest, PaddedTokensDoNotChangeRealPositions) {
  BertModel model(TinyBertConfig());
  model->eval();
  torch::NoGradGuard no_grad;
  auto ids = torch::randint(1, 50, {2, 6}, torch::kInt64);
  const auto mask = torch::tensor({{1, 1, 1, 1, 0, 0}, {1, 1, 1, 0, 0, 0}}, torch::kInt64);
  const auto before = model->forward(ids, mask);
  auto changed = ids.clone();
  changed.masked_fill_(mask == 0, 7);
  const auto after = model->forward(changed, mask);
  const auto real = (mask != 0).unsqueeze(2).expand({2, 6, 16});
  for (size_t i = 0; i < before.size(); ++i) {
    EXPECT_TRUE(torch::allclose(before[i].masked_select(real), after[i].masked_select(real), 0, 1e-6))
        << "hidden state " << i;
  }
  EXPECT_FALSE(torch::allclose(before.back(), after.back())) << "padded positions themselves do change";
}

TEST(BertModelTest, DropoutOnlyInTrainMode) {
  BertModel model(TinyBertConfig());
  const auto ids = torch::randint(1, 50, {2, 6}, torch::kInt64);
  const auto mask = torch::ones({2, 6}, torch::kInt64);
  model->eval();
  EXPECT_TRUE(torch::equal(model->forward(ids, mask).back(), model->forward(ids, mask).back()));
  model->train();
  EXPECT_FALSE(torch::equal(model->forward(ids, mask).back(), model->forward(ids, mask).back()));
}

TEST(BertModelTest, RejectsMalformedInputs) {
  BertModel model(TinyBertConfig());
  const auto mask = torch::ones({2, 6}, torch::kInt64);
  ExpectErrorContaining([&] { model->forward(torch::ones({2, 6}, torch::kInt32), mask); }, {"input_ids", "int64"});
  ExpectErrorContaining([&] { model->forward(torch::ones({2, 6}, torch::kInt64), torch::ones({2, 5})); },
                        {"attention_mask"});
  ExpectErrorContaining([&] { model->forward(torch::ones({1, 21}, torch::kInt64), torch::ones({1, 21})); },
                        {"max_position_embeddings"});
  auto bad = TinyBertConfig();
  bad.num_attention_heads = 3;
  ExpectErrorContaining([&] { BertModel{bad}; }, {"BertConfig", "num_attention_heads"});
}

}  // namespace
}  // namespace iisan::models
