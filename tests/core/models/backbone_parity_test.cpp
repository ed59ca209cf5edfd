// Parity with Hugging Face transformers: small random BERT and ViT models saved by
// transformers (tests/fixtures/{bert,vit}_small, made by tools/make_parity_fixtures.py) are
// loaded through our checkpoint loader, and every hidden state must match the reference that
// transformers computed, to a relative error of 1e-5 in fp32.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/models/backbone_config.h"
#include "core/models/bert.h"
#include "core/models/hf_checkpoint.h"
#include "core/models/safetensors.h"
#include "core/models/vit.h"

namespace iisan::models {
namespace {

const std::filesystem::path kFixtures = std::filesystem::path(IISAN_SOURCE_DIR) / "tests/fixtures";

// max |ours - reference| / max |reference|
double RelativeError(const torch::Tensor& ours, const torch::Tensor& reference) {
  return (ours.to(torch::kFloat64) - reference.to(torch::kFloat64)).abs().max().item<double>() /
         reference.to(torch::kFloat64).abs().max().item<double>();
}

void ExpectHiddenStatesMatch(const std::vector<torch::Tensor>& ours, const SafetensorsReader& reference,
                             int64_t num_layers, const torch::Tensor& valid_tokens) {
  ASSERT_EQ(static_cast<int64_t>(ours.size()), num_layers + 1);
  for (int64_t i = 0; i <= num_layers; ++i) {
    auto expected = reference.Tensor("hidden_state_" + std::to_string(i));
    auto got = ours[i];
    ASSERT_EQ(got.sizes(), expected.sizes()) << "hidden state " << i;
    if (valid_tokens.defined()) {
      // Padded positions are unconstrained (each implementation fills them its own way).
      const auto keep = valid_tokens.unsqueeze(-1).to(torch::kBool);
      got = got.masked_select(keep);
      expected = expected.masked_select(keep);
    }
    EXPECT_LE(RelativeError(got, expected), 1e-5) << "hidden state " << i;
  }
}

TEST(BackboneParityTest, BertMatchesTransformers) {
  const auto folder = kFixtures / "bert_small";
  const auto config = BertConfig::FromJsonFile((folder / "config.json").string());
  torch::manual_seed(1);
  BertModel bert(config);
  LoadBertCheckpoint(bert, folder);
  bert->eval();
  const SafetensorsReader reference(folder / "reference.safetensors");
  torch::NoGradGuard no_grad;
  const auto mask = reference.Tensor("attention_mask");
  const auto hidden = bert->forward(reference.Tensor("input_ids"), mask);
  ExpectHiddenStatesMatch(hidden, reference, config.num_hidden_layers, mask);
}

TEST(BackboneParityTest, VitMatchesTransformers) {
  const auto folder = kFixtures / "vit_small";
  const auto config = ViTConfig::FromJsonFile((folder / "config.json").string());
  torch::manual_seed(1);
  ViTModel vit(config);
  LoadViTCheckpoint(vit, folder);
  vit->eval();
  const SafetensorsReader reference(folder / "reference.safetensors");
  torch::NoGradGuard no_grad;
  const auto hidden = vit->forward(reference.Tensor("pixel_values"));
  ExpectHiddenStatesMatch(hidden, reference, config.num_hidden_layers, torch::Tensor());
}

TEST(BackboneParityTest, RandomInitDoesNotMatch) {
  // The comparison can fail: without the checkpoint the same config gives other states.
  const auto folder = kFixtures / "bert_small";
  torch::manual_seed(1);
  BertModel bert(BertConfig::FromJsonFile((folder / "config.json").string()));
  bert->eval();
  const SafetensorsReader reference(folder / "reference.safetensors");
  torch::NoGradGuard no_grad;
  const auto hidden = bert->forward(reference.Tensor("input_ids"), reference.Tensor("attention_mask"));
  EXPECT_GT(RelativeError(hidden.back(), reference.Tensor("hidden_state_3")), 1e-2);
}

}  // namespace
}  // namespace iisan::models
