// IISAN item encoder: the paper's parameter count and those of its ablations, initial gates, the
// three recurrences (gated and additive) against a hand-written reference, the tower ablations,
// uni-modal variants, errors, and the optimizer groups.
#include "core/models/iisan.h"

#include <cmath>
#include <map>
#include <set>

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

IisanConfig TinyConfig(Modality modality = Modality::kTextImage, SanTowers towers = SanTowers::kIntraInter,
                       SanFusion fusion = SanFusion::kGated) {
  IisanConfig config;
  config.hidden_size = 6;
  config.bottleneck = 3;
  config.embedding_dim = 4;
  config.num_blocks = 3;
  config.modality = modality;
  config.towers = towers;
  config.fusion = fusion;
  return config;
}

const std::vector<SanTowers> kAllTowers = {SanTowers::kIntraInter, SanTowers::kIntra, SanTowers::kInter};
const std::vector<SanFusion> kAllFusions = {SanFusion::kGated, SanFusion::kAdd};

std::string VariantName(SanTowers towers, SanFusion fusion) {
  return SanTowersName(towers) + "/" + SanFusionName(fusion);
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

TEST(IisanItemEncoderTest, TrainableParametersOfTheAblations) {
  // Base size: H = 768, bottleneck 64, embedding 64, K SANBs per tower. Per tower, gates left
  // out: K SANBs x 99,136 (768x64+64 + 64x768+768) + the 768x768 linear (590,592) + the 768 -> 64
  // head (49,216) = 1,333,760 for K = 7. Gated: + K gate logits per tower. com_dense:
  // Linear(64 T -> 64) for T towers = 12,352 (T = 3), 8,256 (T = 2), 4,160 (T = 1).
  struct Expected {
    SanTowers towers;
    SanFusion fusion;
    int64_t num_blocks;
    int64_t trainable;
  };
  const std::vector<Expected> expected = {
      // 3 x 1,333,760 + 21 gates + 12,352 (the paper's IISAN, IISAN.md §4).
      {SanTowers::kIntraInter, SanFusion::kGated, 7, 4'013'653},
      // The same without the 21 gates.
      {SanTowers::kIntraInter, SanFusion::kAdd, 7, 4'013'632},
      // 2 x 1,333,760 + 14 gates + 8,256.
      {SanTowers::kIntra, SanFusion::kGated, 7, 2'675'790},
      {SanTowers::kIntra, SanFusion::kAdd, 7, 2'675'776},
      // 1,333,760 + 7 gates + 4,160.
      {SanTowers::kInter, SanFusion::kGated, 7, 1'337'927},
      {SanTowers::kInter, SanFusion::kAdd, 7, 1'337'920},
      // LayerDrop "0..11" (IISAN.md §7.2): all 13 hidden states, K = 13. Per tower
      // 13 x 99,136 + 639,808 = 1,928,576; 3 x 1,928,576 + 39 gates + 12,352.
      {SanTowers::kIntraInter, SanFusion::kGated, 13, 5'798'119},
      // K = 13, intra only: 2 x 1,928,576 + 26 gates + 8,256.
      {SanTowers::kIntra, SanFusion::kGated, 13, 3'865'434},
  };
  for (const auto& e : expected) {
    IisanConfig config;
    config.towers = e.towers;
    config.fusion = e.fusion;
    config.num_blocks = e.num_blocks;
    const IisanItemEncoder model(config);
    const auto count = CountParameters(*model);
    EXPECT_EQ(count.trainable, e.trainable) << VariantName(e.towers, e.fusion) << ", K = " << e.num_blocks;
    EXPECT_EQ(count.frozen, 0);
  }
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

TEST(IisanItemEncoderTest, AblationsBuildOnlyTheirTowersAndGates) {
  for (const auto towers : kAllTowers) {
    for (const auto fusion : kAllFusions) {
      const IisanItemEncoder model(TinyConfig(Modality::kTextImage, towers, fusion));
      const std::string variant = VariantName(towers, fusion);
      const bool intra = towers != SanTowers::kInter, inter = towers != SanTowers::kIntra;
      std::set<std::string> modules;
      for (const auto& name : ParameterNames(*model)) modules.insert(name.substr(0, name.find('.')));
      std::set<std::string> expected = {"com_dense"};
      if (intra) expected.insert({"text_san", "fc_bert", "bert_pre_fc", "image_san", "fc_cv", "cv_pre_fc"});
      if (inter) expected.insert({"inter_san", "fc_mm", "fc_mm_down"});
      if (fusion == SanFusion::kGated && intra) expected.insert({"text_gates", "image_gates"});
      if (fusion == SanFusion::kGated && inter) expected.insert("inter_gates");
      EXPECT_EQ(modules, expected) << variant;
      // The fusion layer reads 4 features per tower: 3, 2 or 1 towers.
      const int64_t heads = (intra ? 2 : 0) + (inter ? 1 : 0);
      EXPECT_EQ(Parameter(*model, "com_dense.weight").sizes(), torch::IntArrayRef({4, 4 * heads})) << variant;
    }
  }
}

TEST(IisanItemEncoderTest, AddFusionInitialisesAsTheGatedModelDoes) {
  // Gates draw no random numbers: the additive model's parameters are the gated model's.
  torch::manual_seed(7);
  const IisanItemEncoder gated(TinyConfig());
  torch::manual_seed(7);
  const IisanItemEncoder added(TinyConfig(Modality::kTextImage, SanTowers::kIntraInter, SanFusion::kAdd));
  for (const auto& item : added->named_parameters()) {
    EXPECT_TRUE(torch::equal(item.value(), Parameter(*gated, item.key()))) << item.key();
  }
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
  const auto& config = model->config();
  auto gate = [&](const std::string& gates, int64_t k) {
    return 1.0 / (1.0 + std::exp(-param(gates)[k].item<double>() / 0.1));
  };
  const bool gated = config.fusion == SanFusion::kGated;
  const int64_t blocks = config.num_blocks;
  // Gated: SANB(g H + (1 - g) h); additive (the reference's fusion_method="add"): SANB(H + h).
  auto intra = [&](const std::string& tower, const std::string& gates, const torch::Tensor& states) {
    auto h = torch::zeros_like(states.select(1, 0));
    for (int64_t k = 0; k < blocks; ++k) {
      if (gated) {
        const double g = gate(gates, k);
        h = sanb(tower, k, g * states.select(1, k) + (1 - g) * h);
      } else {
        h = sanb(tower, k, states.select(1, k) + h);
      }
    }
    return h;
  };
  const bool intra_towers = config.towers != SanTowers::kInter;
  const bool inter_tower = config.towers != SanTowers::kIntra && text.defined() && image.defined();
  std::vector<torch::Tensor> heads;
  if (intra_towers && image.defined()) {
    heads.push_back(linear(linear(intra("image_san", "image_gates", image), "fc_cv"), "cv_pre_fc"));
  }
  if (intra_towers && text.defined()) {
    heads.push_back(linear(linear(intra("text_san", "text_gates", text), "fc_bert"), "bert_pre_fc"));
  }
  if (inter_tower) {
    auto h = torch::zeros_like(text.select(1, 0));
    for (int64_t k = 0; k < blocks; ++k) {
      if (gated) {
        const double g = gate("inter_gates", k);
        h = sanb("inter_san", k, h + g * image.select(1, k) + (1 - g) * text.select(1, k));
      } else {
        h = sanb("inter_san", k, h + image.select(1, k) + text.select(1, k));
      }
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

TEST(IisanItemEncoderTest, AblationsMatchHandWrittenRecurrences) {
  const auto text = torch::randn({5, 3, 6});
  const auto image = torch::randn({5, 3, 6});
  for (const auto towers : kAllTowers) {
    for (const auto fusion : kAllFusions) {
      torch::manual_seed(3);
      IisanItemEncoder model(TinyConfig(Modality::kTextImage, towers, fusion));
      testing::RandomizeParameters(*model);  // gates included, where there are any
      const auto out = model->forward(text, image);
      EXPECT_EQ(out.sizes(), torch::IntArrayRef({5, 4}));
      torch::NoGradGuard no_grad;
      EXPECT_TRUE(torch::allclose(out, ReferenceItemEncoder(model, text, image), 1e-5, 1e-5))
          << VariantName(towers, fusion);
    }
  }
  // The additive model is not the gated one with its gates at 0.5 (which would halve each term).
  torch::manual_seed(4);
  IisanItemEncoder gated(TinyConfig());
  torch::manual_seed(4);
  IisanItemEncoder added(TinyConfig(Modality::kTextImage, SanTowers::kIntraInter, SanFusion::kAdd));
  EXPECT_FALSE(torch::allclose(gated->forward(text, image), added->forward(text, image), 1e-4, 1e-4));
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
  // Seeded: LibTorch seeds its default generator at random, and with 5 items and a bottleneck of
  // 3 a block's ReLU is now and then dead for every item, leaving its down weights no gradient.
  torch::manual_seed(11);
  for (const auto towers : kAllTowers) {
    for (const auto fusion : kAllFusions) {
      IisanItemEncoder model(TinyConfig(Modality::kTextImage, towers, fusion));
      model->forward(torch::randn({5, 3, 6}), torch::randn({5, 3, 6})).pow(2).sum().backward();
      for (const auto& item : model->named_parameters()) {
        ASSERT_TRUE(item.value().grad().defined()) << VariantName(towers, fusion) << " " << item.key();
        EXPECT_GT(item.value().grad().abs().sum().item<double>(), 0.0) << VariantName(towers, fusion) << " " << item.key();
      }
    }
  }
}

TEST(IisanItemEncoderTest, SingleModalityVariants) {
  torch::manual_seed(2);
  const auto states = torch::randn({5, 3, 6});
  // With one modality, intra+inter and intra build the same model: that modality's tower.
  const std::vector<std::pair<Modality, SanTowers>> variants = {{Modality::kText, SanTowers::kIntraInter},
                                                                {Modality::kText, SanTowers::kIntra},
                                                                {Modality::kImage, SanTowers::kIntraInter},
                                                                {Modality::kImage, SanTowers::kIntra}};
  for (const auto& [modality, towers] : variants) {
    IisanItemEncoder model(TinyConfig(modality, towers));
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
    EXPECT_TRUE(torch::allclose(out, expected, 1e-5, 1e-5)) << ModalityName(modality) << " " << SanTowersName(towers);
  }
}

// The stacked schedule (the GPU's default) computes what the separate one does, forward and
// backward, for every tower set, fusion and modality; on the CPU the default stays separate.
TEST(IisanItemEncoderTest, StackedTowersMatchSeparateOnesWithGradients) {
  using Schedule = TowerSchedule;
  struct Variant {
    Modality modality;
    SanTowers towers;
    SanFusion fusion;
  };
  std::vector<Variant> variants;
  for (const auto towers : kAllTowers) {
    for (const auto fusion : kAllFusions) variants.push_back({Modality::kTextImage, towers, fusion});
  }
  for (const auto fusion : kAllFusions) {
    variants.push_back({Modality::kText, SanTowers::kIntraInter, fusion});
    variants.push_back({Modality::kImage, SanTowers::kIntra, fusion});
  }
  // Cached states may be bf16 (cache.dtype): both schedules read them converted to float32.
  for (const auto state_dtype : {torch::kFloat32, torch::kBFloat16})
  for (const auto& v : variants) {
    const std::string name = ModalityName(v.modality) + " " + VariantName(v.towers, v.fusion) + " " +
                             std::string(c10::toString(state_dtype)) + " states";
    torch::manual_seed(7);
    IisanItemEncoder model(TinyConfig(v.modality, v.towers, v.fusion));
    testing::RandomizeParameters(*model);
    const auto text = v.modality == Modality::kImage ? torch::Tensor() : torch::randn({5, 3, 6}).to(state_dtype);
    const auto image = v.modality == Modality::kText ? torch::Tensor() : torch::randn({5, 3, 6}).to(state_dtype);
    const auto weights = torch::randn({5, 4});
    auto run = [&](Schedule schedule) {
      model->set_tower_schedule(schedule);
      model->zero_grad();
      const auto out = model->forward(text, image);
      (out * weights).sum().backward();
      std::map<std::string, torch::Tensor> grads;
      for (const auto& item : model->named_parameters()) grads[item.key()] = item.value().grad().clone();
      return std::make_pair(out.detach(), grads);
    };
    const auto [separate, separate_grads] = run(Schedule::kSeparate);
    const auto [stacked, stacked_grads] = run(Schedule::kStacked);
    const auto [automatic, automatic_grads] = run(Schedule::kAuto);
    EXPECT_EQ(stacked.sizes(), separate.sizes()) << name;
    EXPECT_TRUE(torch::allclose(stacked, separate, 1e-5, 1e-6)) << name;
    {
      torch::NoGradGuard no_grad;
      auto as_float = [](const torch::Tensor& x) { return x.defined() ? x.to(torch::kFloat32) : x; };
      EXPECT_TRUE(torch::allclose(stacked, ReferenceItemEncoder(model, as_float(text), as_float(image)), 1e-5, 1e-5))
          << name;
      // Without autograd the state terms are formed block by block (the item table's path).
      model->set_tower_schedule(Schedule::kStacked);
      EXPECT_TRUE(torch::allclose(model->forward(text, image), separate, 1e-5, 1e-6)) << name << " (no grad)";
    }
    EXPECT_TRUE(torch::equal(automatic, separate)) << name << ": on the CPU the default is the separate order";
    for (const auto& [key, grad] : separate_grads) {
      EXPECT_TRUE(torch::allclose(stacked_grads.at(key), grad, 1e-5, 1e-6)) << name << " " << key;
      EXPECT_TRUE(torch::equal(automatic_grads.at(key), grad)) << name << " " << key;
    }
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
  // The inter-modal tower alone needs both modalities.
  for (const auto modality : {Modality::kText, Modality::kImage}) {
    ExpectErrorContaining([&] { IisanItemEncoder{TinyConfig(modality, SanTowers::kInter)}; },
                          {"IisanConfig", "'towers'", "\"inter\"", "'modality'", ModalityName(modality)});
  }
  // The inter tower alone still reads (and checks) both modalities' states.
  IisanItemEncoder inter(TinyConfig(Modality::kTextImage, SanTowers::kInter));
  ExpectErrorContaining([&] { inter->forward(good, torch::Tensor()); }, {"image_states", "undefined"});
}

TEST(TowerScheduleTest, ParseAndName) {
  for (const auto schedule : {TowerSchedule::kAuto, TowerSchedule::kSeparate, TowerSchedule::kStacked}) {
    EXPECT_EQ(ParseTowerSchedule(TowerScheduleName(schedule)), schedule);
  }
  ExpectErrorContaining([] { ParseTowerSchedule("fused"); }, {"auto", "separate", "stacked", "fused"});
}

TEST(ModalityTest, ParseAndName) {
  for (const auto modality : {Modality::kText, Modality::kImage, Modality::kTextImage}) {
    EXPECT_EQ(ParseModality(ModalityName(modality)), modality);
  }
  EXPECT_EQ(ParseModality("text+image"), Modality::kTextImage);
  ExpectErrorContaining([] { ParseModality("multimodal"); }, {"text+image", "multimodal"});
  for (const auto towers : kAllTowers) EXPECT_EQ(ParseSanTowers(SanTowersName(towers)), towers);
  EXPECT_EQ(SanTowersName(SanTowers::kIntraInter), "intra+inter");
  ExpectErrorContaining([] { ParseSanTowers("intra_inter"); }, {"intra+inter", "intra_inter"});
  for (const auto fusion : kAllFusions) EXPECT_EQ(ParseSanFusion(SanFusionName(fusion)), fusion);
  EXPECT_EQ(SanFusionName(SanFusion::kAdd), "add");
  ExpectErrorContaining([] { ParseSanFusion("concat"); }, {"gated", "add", "concat"});
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
