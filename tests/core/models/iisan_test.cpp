// IISAN item encoder: the paper's parameter count, initial gates, the three recurrences against
// a hand-written reference, uni-modal variants, errors, and the optimizer groups.
#include "core/models/iisan.h"

#include <cmath>
#include <map>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/models/param_count.h"
#include "core/models/sasrec.h"
#include "tests/core/models/model_test_util.h"

namespace iisan::models {
namespace {

using testing::ExpectErrorContaining;
using testing::Parameter;
using testing::ParameterNames;

IisanConfig TinyConfig(Modality modality = Modality::kTextImage) {
  IisanConfig config;
  config.hidden_size = 6;
  config.bottleneck = 3;
  config.embedding_dim = 4;
  config.num_blocks = 3;
  config.modality = modality;
  return config;
}

TEST(IisanItemEncoderTest, TrainableParametersMatchThePaper) {
  const IisanItemEncoder item_encoder(IisanConfig{});
  const UserEncoder user_encoder(UserEncoderConfig{});
  const auto items = CountParameters(*item_encoder);
  const auto users = CountParameters(*user_encoder);
  EXPECT_EQ(items.frozen, 0);
  EXPECT_EQ(users.trainable, 100'224);
  // 21 SANBs x 99,136 + 21 gates + 3 x (768x768+768) + 3 x (768x64+64) + (192x64+64).
  EXPECT_EQ(items.trainable, 4'013'653);
  EXPECT_EQ(items.trainable + users.trainable, 4'113'877);
}

TEST(IisanItemEncoderTest, CountParametersSeparatesFrozenOnes) {
  IisanItemEncoder model(IisanConfig{});
  Parameter(*model, "fc_bert.weight").set_requires_grad(false);
  const auto count = CountParameters(*model);
  EXPECT_EQ(count.frozen, 768 * 768);
  EXPECT_EQ(count.trainable, 4'013'653 - 768 * 768);
  EXPECT_EQ(count.total(), 4'013'653);
}

TEST(IisanItemEncoderTest, ParameterNamesAndShapes) {
  const IisanItemEncoder model(TinyConfig());
  std::vector<std::string> expected = {"text_gates", "image_gates", "inter_gates"};
  auto add_tower = [&](const std::string& tower) {
    for (int k = 0; k < 3; ++k) {
      for (const char* name : {".down.weight", ".down.bias", ".up.weight", ".up.bias"}) {
        expected.push_back(tower + "." + std::to_string(k) + name);
      }
    }
  };
  add_tower("text_san");
  for (const char* head : {"fc_bert", "bert_pre_fc"}) {
    expected.push_back(std::string(head) + ".weight");
    expected.push_back(std::string(head) + ".bias");
  }
  add_tower("image_san");
  for (const char* head : {"fc_cv", "cv_pre_fc"}) {
    expected.push_back(std::string(head) + ".weight");
    expected.push_back(std::string(head) + ".bias");
  }
  add_tower("inter_san");
  for (const char* head : {"fc_mm", "fc_mm_down", "com_dense"}) {
    expected.push_back(std::string(head) + ".weight");
    expected.push_back(std::string(head) + ".bias");
  }
  EXPECT_EQ(ParameterNames(*model), expected);
  EXPECT_EQ(Parameter(*model, "text_gates").sizes(), torch::IntArrayRef({3}));
  EXPECT_EQ(Parameter(*model, "inter_san.2.down.weight").sizes(), torch::IntArrayRef({3, 6}));
  EXPECT_EQ(Parameter(*model, "inter_san.2.up.weight").sizes(), torch::IntArrayRef({6, 3}));
  EXPECT_EQ(Parameter(*model, "fc_cv.weight").sizes(), torch::IntArrayRef({6, 6}));
  EXPECT_EQ(Parameter(*model, "cv_pre_fc.weight").sizes(), torch::IntArrayRef({4, 6}));
  EXPECT_EQ(Parameter(*model, "com_dense.weight").sizes(), torch::IntArrayRef({4, 12}));
}

TEST(IisanItemEncoderTest, InitialState) {
  torch::manual_seed(0);
  const IisanItemEncoder model(IisanConfig{});
  for (const char* gates : {"text_gates", "image_gates", "inter_gates"}) {
    const auto w = Parameter(*model, gates);
    EXPECT_EQ(w.numel(), 7);
    EXPECT_TRUE(torch::equal(torch::sigmoid(w / 0.1), torch::full({7}, 0.5))) << gates;
  }
  for (const auto& item : model->named_parameters()) {
    const auto& name = item.key();
    if (name.find("_san.") == std::string::npos) continue;
    if (name.ends_with(".bias")) {
      EXPECT_TRUE(torch::equal(item.value(), torch::zeros_like(item.value()))) << name;
    } else {
      EXPECT_NEAR(item.value().std().item<double>(), 0.01, 0.001) << name;
    }
  }
  EXPECT_TRUE(torch::equal(Parameter(*model, "cv_pre_fc.bias"), torch::zeros({64})));
  // xavier_normal: std = sqrt(2 / (fan_in + fan_out)).
  EXPECT_NEAR(Parameter(*model, "cv_pre_fc.weight").std().item<double>(), std::sqrt(2.0 / (768 + 64)), 0.002);
  // PyTorch's default Linear init: U(+-1/sqrt(fan_in)) for weight and bias.
  EXPECT_LE(Parameter(*model, "fc_mm.weight").abs().max().item<double>(), 1 / std::sqrt(768.0));
  EXPECT_GT(Parameter(*model, "fc_mm.bias").abs().max().item<double>(), 0.0);
}

// The item encoder written out with explicit recurrences, reading parameters by name.
torch::Tensor ReferenceItemEncoder(const IisanItemEncoder& model, const torch::Tensor& text,
                                   const torch::Tensor& image) {
  auto param = [&](const std::string& name) { return Parameter(*model, name); };
  auto linear = [&](const torch::Tensor& x, const std::string& prefix) {
    return torch::matmul(x, param(prefix + ".weight").t()) + param(prefix + ".bias");
  };
  auto sanb = [&](const std::string& tower, int64_t k, const torch::Tensor& x) {
    const std::string prefix = tower + "." + std::to_string(k);
    return x + linear(torch::relu(linear(x, prefix + ".down")), prefix + ".up");
  };
  auto gate = [&](const std::string& gates, int64_t k) {
    return 1.0 / (1.0 + std::exp(-param(gates)[k].item<double>() / 0.1));
  };
  const int64_t blocks = model->config().num_blocks;
  auto intra = [&](const std::string& tower, const std::string& gates, const torch::Tensor& states) {
    auto h = torch::zeros_like(states.select(1, 0));
    for (int64_t k = 0; k < blocks; ++k) {
      const double g = gate(gates, k);
      h = sanb(tower, k, g * states.select(1, k) + (1 - g) * h);
    }
    return h;
  };
  std::vector<torch::Tensor> heads;
  if (image.defined()) heads.push_back(linear(linear(intra("image_san", "image_gates", image), "fc_cv"), "cv_pre_fc"));
  if (text.defined()) heads.push_back(linear(linear(intra("text_san", "text_gates", text), "fc_bert"), "bert_pre_fc"));
  if (text.defined() && image.defined()) {
    auto h = torch::zeros_like(text.select(1, 0));
    for (int64_t k = 0; k < blocks; ++k) {
      const double g = gate("inter_gates", k);
      h = sanb("inter_san", k, h + g * image.select(1, k) + (1 - g) * text.select(1, k));
    }
    heads.push_back(linear(linear(h, "fc_mm"), "fc_mm_down"));
  }
  return linear(torch::cat(heads, 1), "com_dense");
}

TEST(IisanItemEncoderTest, MatchesHandWrittenRecurrences) {
  torch::manual_seed(1);
  IisanItemEncoder model(TinyConfig());
  {
    // Distinct gates and weights large enough that every term matters.
    testing::RandomizeParameters(*model);
    torch::NoGradGuard no_grad;
    for (const char* gates : {"text_gates", "image_gates", "inter_gates"}) {
      Parameter(*model, gates).copy_(torch::randn({3}) * 0.2);
    }
  }
  const auto text = torch::randn({5, 3, 6});
  const auto image = torch::randn({5, 3, 6});
  const auto out = model->forward(text, image);
  EXPECT_EQ(out.sizes(), torch::IntArrayRef({5, 4}));
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::allclose(out, ReferenceItemEncoder(model, text, image), 1e-5, 1e-5));
}

TEST(IisanItemEncoderTest, ComputesReducedPrecisionStatesInItsOwnDtype) {
  IisanItemEncoder model(TinyConfig());
  model->eval();
  const auto text = torch::randn({5, 3, 6}).to(torch::kBFloat16);
  const auto image = torch::randn({5, 3, 6}).to(torch::kBFloat16);
  const auto out = model->forward(text, image);
  EXPECT_EQ(out.scalar_type(), torch::kFloat);
  EXPECT_TRUE(torch::equal(out, model->forward(text.to(torch::kFloat), image.to(torch::kFloat))));
}

TEST(IisanItemEncoderTest, EveryParameterReceivesGradient) {
  IisanItemEncoder model(TinyConfig());
  model->forward(torch::randn({5, 3, 6}), torch::randn({5, 3, 6})).pow(2).sum().backward();
  for (const auto& item : model->named_parameters()) {
    ASSERT_TRUE(item.value().grad().defined()) << item.key();
    EXPECT_GT(item.value().grad().abs().sum().item<double>(), 0.0) << item.key();
  }
}

TEST(IisanItemEncoderTest, SingleModalityVariants) {
  torch::manual_seed(2);
  const auto states = torch::randn({5, 3, 6});
  for (const auto modality : {Modality::kText, Modality::kImage}) {
    IisanItemEncoder model(TinyConfig(modality));
    const bool text = modality == Modality::kText;
    for (const auto& name : ParameterNames(*model)) {
      EXPECT_EQ(name.find(text ? "image" : "text"), std::string::npos) << name;
      EXPECT_EQ(name.find("inter"), std::string::npos) << name;
      EXPECT_EQ(name.find("fc_mm"), std::string::npos) << name;
    }
    EXPECT_EQ(Parameter(*model, "com_dense.weight").sizes(), torch::IntArrayRef({4, 4}));
    // A given but unused modality is ignored.
    const auto out = text ? model->forward(states, torch::randn({5, 3, 6})) : model->forward(torch::Tensor(), states);
    EXPECT_EQ(out.sizes(), torch::IntArrayRef({5, 4}));
    torch::NoGradGuard no_grad;
    const auto expected = text ? ReferenceItemEncoder(model, states, torch::Tensor())
                               : ReferenceItemEncoder(model, torch::Tensor(), states);
    EXPECT_TRUE(torch::allclose(out, expected, 1e-5, 1e-5)) << ModalityName(modality);
  }
}

TEST(IisanItemEncoderTest, RejectsMissingOrMisshapenStates) {
  IisanItemEncoder model(TinyConfig());
  const auto good = torch::randn({5, 3, 6});
  ExpectErrorContaining([&] { model->forward(good, torch::Tensor()); },
                        {"image_states", "[N, 3, 6]", "text+image", "undefined"});
  ExpectErrorContaining([&] { model->forward(torch::randn({5, 4, 6}), good); }, {"text_states", "[5, 4, 6]"});
  ExpectErrorContaining([&] { model->forward(good, torch::randn({4, 3, 6})); }, {"same items"});
  auto bad = TinyConfig();
  bad.gate_temperature = 0;
  ExpectErrorContaining([&] { IisanItemEncoder{bad}; }, {"IisanConfig", "gate_temperature"});
}

TEST(ModalityTest, ParseAndName) {
  for (const auto modality : {Modality::kText, Modality::kImage, Modality::kTextImage}) {
    EXPECT_EQ(ParseModality(ModalityName(modality)), modality);
  }
  EXPECT_EQ(ParseModality("text+image"), Modality::kTextImage);
  ExpectErrorContaining([] { ParseModality("multimodal"); }, {"text+image", "multimodal"});
}

TEST(OptimizerGroupTest, ReproducesTheReferenceAssignment) {
  const IisanItemEncoder model(IisanConfig{});
  auto expected_group = [](const std::string& name) {
    if (name.starts_with("text_san.")) return OptimizerGroup::kAdapterText;
    if (name.starts_with("image_san.") || name.starts_with("inter_san.")) return OptimizerGroup::kAdapterImage;
    if (name.starts_with("fc_cv.") || name == "image_gates") return OptimizerGroup::kImage;
    if (name.starts_with("fc_bert.")) return OptimizerGroup::kText;
    return OptimizerGroup::kRecsys;
  };
  std::map<OptimizerGroup, int64_t> sizes;
  for (const auto& item : model->named_parameters()) {
    EXPECT_EQ(IisanParameterGroup(item.key()), expected_group(item.key())) << item.key();
    sizes[IisanParameterGroup(item.key())] += item.value().numel();
  }
  EXPECT_EQ(sizes[OptimizerGroup::kAdapterText], 7 * 99'136);
  EXPECT_EQ(sizes[OptimizerGroup::kAdapterImage], 14 * 99'136);
  EXPECT_EQ(sizes[OptimizerGroup::kImage], 768 * 768 + 768 + 7);
  EXPECT_EQ(sizes[OptimizerGroup::kText], 768 * 768 + 768);
  // text and inter gates, fc_mm, the three 768 -> 64 heads and com_dense.
  EXPECT_EQ(sizes[OptimizerGroup::kRecsys], 14 + 768 * 768 + 768 + 3 * (768 * 64 + 64) + 192 * 64 + 64);

  EXPECT_EQ(IisanParameterGroup("item_encoder.text_san.0.down.weight"), OptimizerGroup::kAdapterText);
  EXPECT_EQ(IisanParameterGroup("item_encoder.image_gates"), OptimizerGroup::kImage);
  EXPECT_EQ(IisanParameterGroup("item_encoder.bert_pre_fc.weight"), OptimizerGroup::kRecsys);
  EXPECT_EQ(IisanParameterGroup("user_encoder.blocks.0.ffn_in.weight"), OptimizerGroup::kRecsys);
}

}  // namespace
}  // namespace iisan::models
