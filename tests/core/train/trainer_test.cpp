// Batching, the seeded user order, the popularity baseline and the training loop on a small
// hand-made dataset with random cached states.
#include "core/train/trainer.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tests/core/models/model_test_util.h"
#include "tests/core/train/sequence_dataset.h"

namespace iisan::train {
namespace {

TEST(TrainerTest, SeededPermutationIsADeterministicPermutation) {
  const auto a = SeededPermutation(1000, 7);
  const auto b = SeededPermutation(1000, 7);
  const auto c = SeededPermutation(1000, 8);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  auto sorted = a;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int64_t> expected(1000);
  std::iota(expected.begin(), expected.end(), 0);
  EXPECT_EQ(sorted, expected);
}

TEST(TrainerTest, SequenceBatchIsLeftPaddedWithTheReferenceMask) {
  // IISAN.md §2.6: ids = [0]*(L+1-n) + s, log_mask = [0]*(L+1-n) + [1]*(n-1).
  const auto batch = MakeSequenceBatch({{5, 6, 7}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}}, 10);
  EXPECT_TRUE(torch::equal(batch.item_ids[0], torch::tensor({0, 0, 0, 0, 0, 0, 0, 0, 5, 6, 7}, torch::kInt64)));
  EXPECT_TRUE(torch::equal(batch.log_mask[0], torch::tensor({0, 0, 0, 0, 0, 0, 0, 0, 1, 1}, torch::kFloat32)));
  EXPECT_TRUE(batch.log_mask[1].eq(1).all().item<bool>());
  EXPECT_THROW(MakeSequenceBatch({{1}}, 10), std::invalid_argument);
  EXPECT_THROW(MakeSequenceBatch({std::vector<int32_t>(12, 1)}, 10), std::invalid_argument);
}

// 40 users over 30 items; user u walks items u % 30 + 1, +1, +2, … so that the next item is
// predictable from the last one.
data::Dataset WalkDataset() {
  std::vector<std::vector<int32_t>> sequences;
  for (int u = 0; u < 40; ++u) {
    std::vector<int32_t> seq;
    for (int k = 0; k < 6 + u % 5; ++k) seq.push_back(static_cast<int32_t>((u + k) % 30 + 1));
    sequences.push_back(seq);
  }
  return testing::SequenceDataset(30, sequences);
}

TEST(TrainerTest, PopularityBaselineRanksByTrainCounts) {
  const auto dataset = WalkDataset();
  const auto metrics = EvaluatePopularity(dataset, Split::kTest, EvalOptions{});
  EXPECT_EQ(metrics.users, 40);
  // Recompute HR@10 by brute force: rank = 1 + items (not in history) more popular, ties by id.
  int hits = 0;
  for (int64_t u = 0; u < dataset.num_users(); ++u) {
    const auto example = dataset.test_example(u);
    std::vector<bool> excluded(31, false);
    for (int32_t item : example.excluded) excluded[item] = true;
    int rank = 1;
    for (int32_t item = 1; item <= 30; ++item) {
      if (excluded[item] || item == example.target) continue;
      const double p = dataset.popularity[item], t = excluded[example.target] ? -1 : dataset.popularity[example.target];
      rank += p > t || (p == t && item < example.target);
    }
    if (excluded[example.target]) rank = 31;
    hits += rank <= 10;
  }
  EXPECT_NEAR(metrics.hr(10), hits / 40.0, 1e-12);
}

struct TrainedRun {
  TrainResult result;
  std::vector<double> losses;
};

TrainedRun TrainWalk(uint64_t seed) {
  const auto dataset = WalkDataset();
  torch::manual_seed(0);
  ItemStates states{torch::randn({31, 3, 16}), torch::Tensor()};
  states.text[0].zero_();
  models::IisanConfig item;
  item.hidden_size = 16;
  item.num_blocks = 3;
  item.modality = models::Modality::kText;
  models::UserEncoderConfig user;
  TrainOptions options;
  options.batch_size = 8;
  options.epochs = 6;
  options.patience = 100;
  options.seed = seed;
  options.lr = {1e-2, 1e-2, 1e-2, 1e-2, 1e-2};
  torch::manual_seed(seed);
  RecommenderConfig config;
  config.method = Method::kIisan;
  config.modality = models::Modality::kText;
  config.side = item;
  config.user = user;
  Recommender model(config);
  model->Prepare(states, {}, torch::kCPU);
  Trainer trainer(dataset, model, options);
  TrainedRun run;
  run.result = trainer.Fit([&](const EpochRecord& record) { run.losses.push_back(record.train_loss); });
  return run;
}

TEST(TrainerTest, TrainingLowersTheLossAndIsReproducible) {
  const auto first = TrainWalk(3);
  const auto second = TrainWalk(3);
  ASSERT_EQ(first.losses.size(), 6u);
  EXPECT_LT(first.losses.back(), first.losses.front());
  EXPECT_EQ(first.losses, second.losses);
  EXPECT_EQ(first.result.best_epoch, second.result.best_epoch);
  EXPECT_EQ(first.result.test.hit_sum, second.result.test.hit_sum);
  EXPECT_EQ(first.result.test.users, 40);
}


// ---- The methods of the comparison (IISAN.md §5) on tiny live backbones ----

// Titles and images for WalkDataset's 30 items; row 0 is padding.
ItemInputs TinyInputs() {
  torch::manual_seed(11);
  ItemInputs inputs;
  inputs.token_ids = torch::randint(1, 50, {31, 6}, torch::kInt64);
  inputs.attention_mask = torch::ones({31, 6}, torch::kInt64);
  inputs.attention_mask.narrow(1, 4, 2).zero_();
  inputs.token_ids[0].zero_();
  inputs.attention_mask[0].zero_();
  inputs.pixels = torch::randint(0, 256, {31, 3, 8, 8}, torch::kInt64).to(torch::kUInt8);
  inputs.pixels[0].zero_();
  return inputs;
}

RecommenderConfig TinyConfig(Method method) {
  RecommenderConfig config;
  config.method = method;
  config.text = models::testing::TinyBertConfig();
  config.image = models::testing::TinyViTConfig();
  config.kept_layers = {0, 1, 2};
  config.side.hidden_size = 16;
  config.side.num_blocks = 3;
  config.side.bottleneck = 4;
  config.adapter_bottleneck = 4;
  config.lora_rank = 2;
  return config;
}

TEST(MethodTest, UncachedIisanRunsItsBackbonesInBf16OnCuda) {
  // On CUDA, uncached IISAN's frozen bf16 backbones run in bf16 throughout, as the cache build
  // runs them, not under autocast (which ran every LayerNorm in fp32 between two casts): the
  // item embeddings equal the side network applied to states from plain bf16 forwards.
  if (!torch::cuda::is_available()) GTEST_SKIP() << "needs a CUDA device (bf16 backbones run on CUDA alone)";
  torch::manual_seed(5);
  const auto inputs = TinyInputs();
  Recommender model(TinyConfig(Method::kIisanUncached));
  model->Prepare({}, inputs, torch::kCUDA);
  model->eval();
  torch::NoGradGuard no_grad;
  const auto ids = torch::arange(0, 31, torch::kInt64);
  const auto embedded = model->EmbedItems(ids);

  const torch::Device cuda(torch::kCUDA);
  const auto text = model->text_backbone->ClsStates(inputs.token_ids.to(cuda), inputs.attention_mask.to(cuda));
  auto pixels = inputs.pixels.to(cuda).to(torch::kFloat32).div(255.0).sub(0.5).div(0.5);
  pixels.masked_fill_((ids.to(cuda) == 0).view({-1, 1, 1, 1}), 0.0);
  const auto image = model->image_backbone->ClsStates(pixels.to(torch::kBFloat16));
  ASSERT_EQ(text.back().scalar_type(), torch::kBFloat16);
  ASSERT_EQ(image.back().scalar_type(), torch::kBFloat16);
  auto kept = [](const std::vector<torch::Tensor>& states) {
    return torch::stack({states[0], states[1], states[2]}, 1).to(torch::kFloat32);
  };
  const auto expected = model->side_network->forward(kept(text), kept(image));
  EXPECT_TRUE(torch::equal(embedded, expected))
      << "largest difference " << (embedded - expected).abs().max().item<float>();
}

TEST(MethodTest, ZeroPaddedRowsLeaveTheLossUnchanged) {
  // The CUDA-graph step pads the last batch of an epoch with all-zero rows and embeds every
  // position; the loss must equal the de-duplicated loss of the unpadded batch.
  const auto dataset = WalkDataset();
  torch::manual_seed(4);
  auto config = TinyConfig(Method::kIisan);
  config.modality = models::Modality::kText;
  Recommender model(config);
  model->Prepare({torch::randn({31, 3, 16}), torch::Tensor()}, {}, torch::kCPU);
  model->eval();
  std::vector<std::vector<int32_t>> sequences;
  for (int64_t u = 0; u < 5; ++u) {
    const auto seq = dataset.train_sequence(u);
    sequences.emplace_back(seq.begin(), seq.end());
  }
  const auto batch = MakeSequenceBatch(sequences, 10);
  const auto log_pop = torch::log(torch::tensor(dataset.popularity).to(torch::kFloat32).clamp_min(1e-12));
  const auto expected = model->Loss(batch, log_pop);
  auto ids = torch::zeros({8, 11}, torch::kInt64);
  auto mask = torch::zeros({8, 10});
  ids.narrow(0, 0, 5).copy_(batch.item_ids);
  mask.narrow(0, 0, 5).copy_(batch.log_mask);
  EXPECT_NEAR(model->LossOnDevice(ids, mask, log_pop).item<double>(), expected.item<double>(), 1e-5);
}

TEST(MethodTest, ZeroPaddedRowsLeaveTheLossOfFullLengthUsersUnchanged) {
  // Users whose 11 ids hold no padding item 0: a padded row's last column (item 0) must not
  // become a negative for them (the graph step pads the last batch, data-parallel ranks pad
  // their shares), on the cached graph path and on the data-parallel shard path.
  torch::manual_seed(4);
  auto config = TinyConfig(Method::kIisan);
  config.modality = models::Modality::kText;
  Recommender model(config);
  model->Prepare({torch::randn({31, 3, 16}), torch::Tensor()}, {}, torch::kCPU);
  model->eval();
  std::vector<std::vector<int32_t>> sequences;
  for (int32_t u = 0; u < 5; ++u) {
    std::vector<int32_t> seq;
    for (int32_t k = 0; k < 11; ++k) seq.push_back((u * 3 + k) % 30 + 1);
    sequences.push_back(seq);
  }
  const auto batch = MakeSequenceBatch(sequences, 10);
  ASSERT_TRUE(batch.item_ids.ne(0).all().item<bool>());
  const auto log_pop = torch::log(torch::rand({31}).clamp_min(1e-3));
  const auto expected = model->Loss(batch, log_pop).item<double>();
  auto ids = torch::zeros({8, 11}, torch::kInt64);
  auto mask = torch::zeros({8, 10});
  ids.narrow(0, 0, 5).copy_(batch.item_ids);
  mask.narrow(0, 0, 5).copy_(batch.log_mask);
  EXPECT_NEAR(model->LossOnDevice(ids, mask, log_pop).item<double>(), expected, 1e-5);
  // Two shards of 4 rows (5 real users + 3 padded), as two ranks compute them: their sum is
  // the one-process loss.
  const SequenceBatch global{ids, mask};
  double total = 0.0;
  for (int shard = 0; shard < 2; ++shard) {
    // Each "rank" embeds the whole global batch here (the gather is the identity over all rows).
    total += model->LossShard(global, shard * 4, 4, log_pop, [&](const torch::Tensor&) {
      return model->EmbedItems(ids.reshape({-1})).view({8, 11, -1});
    }).item<double>();
  }
  EXPECT_NEAR(total, expected, 1e-5);
}

TEST(MethodTest, DistinctItemsArePaddedToTheBucketAndMapBack) {
  const auto ids = torch::tensor({0, 0, 7, 3, 7, 9, 3, 1}, torch::kInt64).view({2, 4});
  const auto plain = FindDistinctItems(ids);
  EXPECT_TRUE(torch::equal(plain.ids, torch::tensor({0, 1, 3, 7, 9}, torch::kInt64)));
  EXPECT_TRUE(torch::equal(plain.ids.index_select(0, plain.inverse), ids.reshape({-1})));
  const auto padded = FindDistinctItems(ids, 3);  // 5 distinct -> 6 rows
  EXPECT_TRUE(torch::equal(padded.ids, torch::tensor({0, 1, 3, 7, 9, 0}, torch::kInt64)));
  EXPECT_TRUE(torch::equal(padded.inverse, plain.inverse));
  EXPECT_EQ(FindDistinctItems(ids, 32).ids.size(0), 8);  // capped at the number of positions
}

TEST(MethodTest, PaddedDistinctItemsLeaveLossAndGradientsUnchanged) {
  // The CUDA-graph step of the live methods pads each batch's distinct items with the padding
  // item up to a multiple of a bucket size; nothing may depend on the extra rows.
  const auto dataset = WalkDataset();
  std::vector<std::vector<int32_t>> sequences;
  for (int64_t u = 0; u < 6; ++u) {
    const auto seq = dataset.train_sequence(u);
    sequences.emplace_back(seq.begin(), seq.end());
  }
  const auto batch = MakeSequenceBatch(sequences, 10);
  const auto log_pop = torch::log(torch::tensor(dataset.popularity).to(torch::kFloat32).clamp_min(1e-12));
  const int64_t distinct = FindDistinctItems(batch.item_ids).ids.size(0);
  for (Method method : {Method::kFft, Method::kLora, Method::kIisanUncached}) {
    torch::manual_seed(5);
    Recommender model(TinyConfig(method));
    model->Prepare({}, TinyInputs(), torch::kCPU);
    model->eval();  // no dropout: both passes must see the same function
    auto gradients = [&](int64_t pad) {
      model->zero_grad();
      auto loss = model->Loss(batch, log_pop, pad);
      loss.backward();
      std::vector<torch::Tensor> grads{loss.detach()};
      for (const auto& p : model->parameters()) {
        if (p.requires_grad()) grads.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
      }
      return grads;
    };
    const auto plain = gradients(0);
    const auto padded = gradients(distinct + 7);  // at least 7 padding rows
    ASSERT_EQ(plain.size(), padded.size());
    EXPECT_NEAR(plain[0].item<double>(), padded[0].item<double>(), 1e-6) << MethodName(method);
    for (size_t i = 1; i < plain.size(); ++i) {
      EXPECT_TRUE(torch::allclose(plain[i], padded[i], 1e-4, 1e-6)) << MethodName(method) << " parameter " << i;
    }
  }
}

TEST(MethodTest, CudaGraphStepsTrainAsEagerStepsDo) {
  // On a GPU, every method's step runs as a CUDA graph (live methods: one per padded count of
  // distinct items); with dropout off it must train as the eager step does. bf16 matmuls of
  // other shapes round differently, hence the tolerance. Needs CUDA: CI's CPU runners skip it.
  if (!torch::cuda::is_available()) GTEST_SKIP() << "needs a CUDA device (CUDA graphs)";
  const auto dataset = WalkDataset();
  for (Method method : {Method::kFft, Method::kLora, Method::kIisanUncached}) {
    auto config = TinyConfig(method);
    config.text.hidden_dropout_prob = config.text.attention_probs_dropout_prob = 0.0;
    config.image.hidden_dropout_prob = config.image.attention_probs_dropout_prob = 0.0;
    config.user.dropout = 0.0;
    std::vector<std::vector<double>> losses;
    std::vector<std::vector<torch::Tensor>> params;
    std::vector<torch::Tensor> initial;
    for (bool graph : {false, true}) {
      torch::manual_seed(8);
      Recommender model(config);
      model->Prepare({}, TinyInputs(), torch::kCUDA);
      if (initial.empty()) {
        for (const auto& p : model->parameters()) {
          if (p.requires_grad()) initial.push_back(p.detach().to(torch::kCPU, torch::kFloat32));
        }
      }
      TrainOptions options;
      options.batch_size = 8;
      options.epochs = 2;
      options.patience = 100;
      options.lr = {1e-3, 1e-3, 1e-3, 1e-3, 1e-3};
      options.device = torch::kCUDA;
      options.cuda_graph = graph;
      losses.emplace_back();
      Trainer(dataset, model, options).Fit([&](const EpochRecord& r) { losses.back().push_back(r.train_loss); });
      params.emplace_back();
      for (const auto& p : model->parameters()) {
        if (p.requires_grad()) params.back().push_back(p.detach().to(torch::kCPU, torch::kFloat32));
      }
    }
    ASSERT_EQ(losses[0].size(), 2u);
    for (size_t e = 0; e < 2; ++e) EXPECT_NEAR(losses[0][e], losses[1][e], 1e-2 * std::abs(losses[0][e])) << MethodName(method);
    // The two runs must end far closer to each other than to where they started: a graph that
    // replayed stale inputs or skipped an update would be about as far apart as the updates.
    double moved = 0.0, apart = 0.0;
    for (size_t i = 0; i < params[0].size(); ++i) {
      moved += (params[0][i] - initial[i]).abs().sum().item<double>();
      apart += (params[0][i] - params[1][i]).abs().sum().item<double>();
    }
    EXPECT_GT(moved, 0.0) << MethodName(method);
    EXPECT_LT(apart, 0.05 * moved) << MethodName(method) << ": moved " << moved << ", apart " << apart;
  }
}

TEST(MethodTest, PackedAdamMatchesLibTorchAdam) {
  torch::manual_seed(8);
  auto a = torch::randn({3, 4}).requires_grad_();
  auto b = torch::randn({5}).requires_grad_();
  auto a2 = a.detach().clone().requires_grad_();
  auto b2 = b.detach().clone().requires_grad_();
  FlatAdam packed({{{a}, 0.01}, {{b}, 0.002}});
  torch::optim::Adam reference({torch::optim::OptimizerParamGroup({a2}, std::make_unique<torch::optim::AdamOptions>(0.01)),
                                torch::optim::OptimizerParamGroup({b2}, std::make_unique<torch::optim::AdamOptions>(0.002))},
                               torch::optim::AdamOptions(0.01));
  for (int step = 0; step < 5; ++step) {
    packed.ZeroGrad();
    reference.zero_grad();
    ((a * a).sum() + (b.sin()).sum() * step).backward();
    ((a2 * a2).sum() + (b2.sin()).sum() * step).backward();
    packed.Step();
    reference.step();
  }
  EXPECT_TRUE(torch::allclose(a, a2, 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(b, b2, 1e-5, 1e-6));
}

TEST(MethodTest, PackedBackwardWritesWhatBackwardAccumulates) {
  // FlatAdam::Backward: the gradients land in the packed buffers as ZeroGrad + backward() leave
  // them, bit for bit, stale values overwritten, and an unreached parameter gets zeros.
  torch::manual_seed(9);
  auto a = torch::randn({3, 4}).requires_grad_();
  auto b = torch::randn({5}).requires_grad_();
  auto unused = torch::randn({2}).requires_grad_();
  auto a2 = a.detach().clone().requires_grad_();
  auto b2 = b.detach().clone().requires_grad_();
  auto unused2 = unused.detach().clone().requires_grad_();
  FlatAdam packed({{{a, unused}, 0.01}, {{b}, 0.002}});
  FlatAdam accumulated({{{a2, unused2}, 0.01}, {{b2}, 0.002}});
  for (int step = 0; step < 3; ++step) {
    // `a` is used twice: autograd sums the two contributions before they reach the buffer.
    packed.Backward((a * a).sum() + (a.exp() * b.sum()).sum() + (b.sin()).sum() * step);
    accumulated.ZeroGrad();
    ((a2 * a2).sum() + (a2.exp() * b2.sum()).sum() + (b2.sin()).sum() * step).backward();
    for (size_t g = 0; g < 2; ++g) {
      EXPECT_TRUE(torch::equal(packed.flat_grads()[g], accumulated.flat_grads()[g])) << "step " << step << ", group " << g;
    }
    EXPECT_TRUE(torch::equal(unused.grad(), torch::zeros({2}))) << "step " << step;
    packed.Step();
    accumulated.Step();
    packed.flat_grads()[0].fill_(7.0);  // stale values: the next Backward must overwrite them
  }
  EXPECT_TRUE(torch::equal(a, a2));
  EXPECT_TRUE(torch::equal(b, b2));
}

TEST(MethodTest, BaseSizeTrainableParametersMatchTheReference) {
  // IISAN.md §4, §5: the counts computed from the reference code.
  const std::vector<std::pair<Method, int64_t>> expected = {
      {Method::kIisanUncached, 4113877}, {Method::kFft, 194897216}, {Method::kAdapter, 4965440},
      {Method::kLora, 833600},          {Method::kBitfit, 412736}};
  for (const auto& [method, count] : expected) {
    RecommenderConfig config;  // base-size BERT and ViT, 7 kept layers
    config.method = method;
    config.kept_layers = {0, 2, 4, 6, 8, 10, 12};
    Recommender model(config);
    int64_t trainable = 0;
    for (const auto& p : model->parameters()) trainable += p.requires_grad() ? p.numel() : 0;
    EXPECT_EQ(trainable, count) << MethodName(method);
  }
}

TEST(MethodTest, OptimizerGroupsFollowTheReferenceRules) {
  Recommender lora(TinyConfig(Method::kLora));
  EXPECT_EQ(lora->GroupOf("text_backbone.encoder.layer.0.attention.self.query.lora_A"),
            models::OptimizerGroup::kAdapterText);
  EXPECT_EQ(lora->GroupOf("text_backbone.encoder.layer.0.attention.self.query.bias"), models::OptimizerGroup::kText);
  EXPECT_EQ(lora->GroupOf("image_backbone.encoder.layer.1.attention.attention.value.lora_B"),
            models::OptimizerGroup::kAdapterImage);
  EXPECT_EQ(lora->GroupOf("item_encoder.cv_classifier.weight"), models::OptimizerGroup::kRecsys);
  Recommender adapter(TinyConfig(Method::kAdapter));
  EXPECT_EQ(adapter->GroupOf("image_backbone.encoder.layer.0.output.adapter.up.weight"),
            models::OptimizerGroup::kAdapterImage);
  Recommender iisan(TinyConfig(Method::kIisanUncached));
  EXPECT_EQ(iisan->GroupOf("item_encoder.fc_bert.weight"), models::OptimizerGroup::kText);
  EXPECT_EQ(iisan->GroupOf("item_encoder.text_san.0.down.weight"), models::OptimizerGroup::kAdapterText);
  EXPECT_EQ(iisan->GroupOf("user_encoder.position_embedding.weight"), models::OptimizerGroup::kRecsys);
  EXPECT_EQ(ReferenceHyperparameters(Method::kFft).batch_size, 32);
  EXPECT_DOUBLE_EQ(ReferenceHyperparameters(Method::kFft).lr.recsys, 1e-4);
  EXPECT_DOUBLE_EQ(ReferenceHyperparameters(Method::kAdapter).lr.adapter_image, 4e-4);
  EXPECT_EQ(ReferenceHyperparameters(Method::kIisan).batch_size, 64);
  EXPECT_THROW(ParseMethod("prompt"), std::runtime_error);
}

TEST(MethodTest, FreshPeftBackbonesComputeWhatThePretrainedOnesDo) {
  // LoRA keeps the pretrained W and b (B starts at 0), so a fresh LoRA model is the
  // pretrained model; the reference's LoRA discards them (IISAN.md §9.1).
  torch::manual_seed(5);
  models::BertModel plain(models::testing::TinyBertConfig());
  models::PeftConfig lora;
  lora.lora_rank = 2;
  models::BertModel with_lora(models::testing::TinyBertConfig(), lora);
  {
    torch::NoGradGuard no_grad;
    auto target = with_lora->named_parameters();
    for (const auto& item : plain->named_parameters()) target[item.key()].copy_(item.value());
  }
  plain->eval();
  with_lora->eval();
  const auto inputs = TinyInputs();
  const auto a = plain->forward(inputs.token_ids.narrow(0, 1, 5), inputs.attention_mask.narrow(0, 1, 5));
  const auto b = with_lora->forward(inputs.token_ids.narrow(0, 1, 5), inputs.attention_mask.narrow(0, 1, 5));
  EXPECT_TRUE(torch::allclose(a.back(), b.back(), 0, 1e-6));
  // A nonzero B changes the output: the LoRA path is live.
  {
    torch::NoGradGuard no_grad;
    with_lora->named_parameters()["encoder.layer.0.attention.self.value.lora_B"].fill_(0.5);
  }
  const auto c = with_lora->forward(inputs.token_ids.narrow(0, 1, 5), inputs.attention_mask.narrow(0, 1, 5));
  EXPECT_FALSE(torch::allclose(a.back(), c.back(), 0, 1e-3));
}

TEST(MethodTest, EachMethodTrainsExactlyItsParameters) {
  const auto dataset = WalkDataset();
  for (Method method : {Method::kFft, Method::kAdapter, Method::kLora, Method::kBitfit, Method::kIisanUncached}) {
    torch::manual_seed(1);
    Recommender model(TinyConfig(method));
    model->Prepare({}, TinyInputs(), torch::kCPU);
    std::map<std::string, torch::Tensor> before;
    for (const auto& item : model->named_parameters()) before[item.key()] = item.value().detach().clone();
    TrainOptions options;
    options.batch_size = 8;
    options.epochs = 1;
    options.max_steps_per_epoch = 3;
    options.lr = {1e-2, 1e-2, 1e-2, 1e-2, 1e-2};
    Trainer trainer(dataset, model, options);
    EpochRecord last;
    const auto result = trainer.Fit([&](const EpochRecord& record) { last = record; });
    EXPECT_TRUE(std::isfinite(last.train_loss)) << MethodName(method);
    EXPECT_EQ(last.train_steps, 3);
    EXPECT_EQ(last.full_epoch_steps, 5);
    EXPECT_TRUE(result.train_epoch_extrapolated);
    EXPECT_EQ(result.peak_memory.kind, "host peak RSS");
    int moved = 0, frozen_moved = 0;
    for (const auto& item : model->named_parameters()) {
      const bool changed = !torch::equal(before[item.key()], item.value());
      if (item.value().requires_grad()) {
        moved += changed;
      } else {
        frozen_moved += changed;
      }
    }
    EXPECT_GT(moved, 0) << MethodName(method);
    EXPECT_EQ(frozen_moved, 0) << MethodName(method) << ": a frozen parameter changed";
    if (method == Method::kBitfit) {
      for (const auto& item : model->named_parameters()) {
        if (item.key().rfind("text_backbone.", 0) == 0 && item.value().requires_grad()) {
          EXPECT_EQ(item.key().substr(item.key().size() - 4), "bias") << item.key();
        }
      }
    }
  }
}

TEST(MethodTest, EveryMethodInEveryModalityTrainsOnEveryDevicePresent) {
  // A live method with one modality once failed on the GPU alone ("Accessing empty
  // ModuleHolder": the bf16 conversion of the frozen weights asked the absent backbone for its
  // module). Every method, every modality, each device this machine has; on CUDA with and
  // without graphs. Five steps: the graph path captures after three warm-up steps.
  const auto dataset = WalkDataset();
  std::vector<torch::Device> devices = {torch::kCPU};
  if (torch::cuda::is_available()) devices.push_back(torch::kCUDA);
  for (const auto& device : devices) {
    for (bool graph : device.is_cuda() ? std::vector<bool>{false, true} : std::vector<bool>{false}) {
      for (Method method : AllMethods()) {
        for (auto modality : {models::Modality::kText, models::Modality::kImage, models::Modality::kTextImage}) {
          const std::string what = MethodName(method) + " " + models::ModalityName(modality) + " on " +
                                   device.str() + (graph ? " (graph)" : "");
          auto config = TinyConfig(method);
          config.modality = modality;
          config.side.modality = modality;
          torch::manual_seed(2);
          Recommender model(config);
          ItemStates states;
          if (method == Method::kIisan) {
            if (modality != models::Modality::kImage) states.text = torch::randn({31, 3, 16});
            if (modality != models::Modality::kText) states.image = torch::randn({31, 3, 16});
          }
          TrainOptions options;
          options.batch_size = 8;
          options.epochs = 1;
          options.lr = {1e-3, 1e-3, 1e-3, 1e-3, 1e-3};
          options.device = device;
          options.cuda_graph = graph;
          try {
            model->Prepare(states, method == Method::kIisan ? ItemInputs{} : TinyInputs(), device);
            EpochRecord last;
            const auto result = Trainer(dataset, model, options).Fit([&](const EpochRecord& record) { last = record; });
            EXPECT_EQ(last.train_steps, 5) << what;
            // The peak's phases exist on CUDA alone, and the peak is the largest of them.
            if (device.is_cuda()) {
              ASSERT_EQ(result.memory_phases.size(), 3u) << what;
              int64_t largest = 0;
              for (const auto& [phase, bytes] : result.memory_phases) largest = std::max(largest, bytes);
              EXPECT_EQ(result.peak_memory.bytes, largest) << what;
              EXPECT_GT(result.memory_phases[1].second, result.memory_phases[0].second) << what << ": train_peak";
            } else {
              EXPECT_TRUE(result.memory_phases.empty()) << what;
            }
            EXPECT_TRUE(std::isfinite(last.train_loss)) << what;
            EXPECT_EQ(last.valid.users, 40) << what;
          } catch (const std::exception& error) {
            ADD_FAILURE() << what << ": " << error.what();
          }
        }
      }
    }
  }
}

TEST(MethodTest, CachedIisanTrainsInEveryAblation) {
  // The paper's ablations (IISAN.md §7.2) as cached training: every set of towers and both
  // fusions train, move every parameter of the side network, and count their parameters as by
  // hand. Side network at H = 16, bottleneck 4, embedding 64, K = 3: a tower without gates holds
  // 3 SANBs x 148 (16x4+4 + 4x16+16) + 16x16+16 + 16x64+64 = 1,804; gated towers add 3 gate
  // logits each; com_dense is Linear(64 T -> 64) for T towers (12,352, 8,256, 4,160); the user
  // encoder holds 100,224.
  struct Variant {
    models::SanTowers towers;
    models::SanFusion fusion;
    int64_t side;
  };
  const std::vector<Variant> variants = {
      {models::SanTowers::kIntraInter, models::SanFusion::kGated, 3 * 1'804 + 9 + 12'352},
      {models::SanTowers::kIntraInter, models::SanFusion::kAdd, 3 * 1'804 + 12'352},
      {models::SanTowers::kIntra, models::SanFusion::kGated, 2 * 1'804 + 6 + 8'256},
      {models::SanTowers::kIntra, models::SanFusion::kAdd, 2 * 1'804 + 8'256},
      {models::SanTowers::kInter, models::SanFusion::kGated, 1'804 + 3 + 4'160},
      {models::SanTowers::kInter, models::SanFusion::kAdd, 1'804 + 4'160},
  };
  const auto dataset = WalkDataset();
  for (const auto& v : variants) {
    const std::string what = models::SanTowersName(v.towers) + "/" + models::SanFusionName(v.fusion);
    auto config = TinyConfig(Method::kIisan);
    config.side.towers = v.towers;
    config.side.fusion = v.fusion;
    torch::manual_seed(2);
    Recommender model(config);
    model->Prepare({torch::randn({31, 3, 16}), torch::randn({31, 3, 16})}, {}, torch::kCPU);
    std::map<std::string, torch::Tensor> before;
    for (const auto& item : model->named_parameters()) before[item.key()] = item.value().detach().clone();
    TrainOptions options;
    options.batch_size = 8;
    options.epochs = 1;
    options.max_steps_per_epoch = 3;
    options.lr = {1e-2, 1e-2, 1e-2, 1e-2, 1e-2};
    Trainer trainer(dataset, model, options);
    EXPECT_EQ(trainer.trainable_parameters(), v.side + 100'224) << what;
    EpochRecord last;
    trainer.Fit([&](const EpochRecord& record) { last = record; });
    EXPECT_EQ(last.train_steps, 3) << what;
    EXPECT_TRUE(std::isfinite(last.train_loss)) << what;
    EXPECT_EQ(last.valid.users, 40) << what;
    for (const auto& item : model->named_parameters()) {
      if (item.key().rfind("item_encoder.", 0) != 0) continue;
      EXPECT_FALSE(torch::equal(before[item.key()], item.value())) << what << ": " << item.key() << " did not train";
    }
  }
}

TEST(MethodTest, UncachedIisanComputesWhatCachedIisanComputes) {
  // The side network on live frozen backbones and on their cached [CLS] states must agree.
  const auto dataset = WalkDataset();
  torch::manual_seed(2);
  Recommender uncached(TinyConfig(Method::kIisanUncached));
  const auto inputs = TinyInputs();
  uncached->Prepare({}, inputs, torch::kCPU);
  ItemStates states;
  {
    torch::NoGradGuard no_grad;
    uncached->eval();
    auto kept = [](const std::vector<torch::Tensor>& hidden) {
      return torch::stack({hidden[0].select(1, 0), hidden[1].select(1, 0), hidden[2].select(1, 0)}, 1);
    };
    states.text = kept(uncached->text_backbone->forward(inputs.token_ids, inputs.attention_mask));
    auto pixels = (inputs.pixels.to(torch::kFloat32) / 255.0 - 0.5) / 0.5;
    pixels[0].zero_();
    states.image = kept(uncached->image_backbone->forward(pixels));
  }
  torch::manual_seed(2);
  auto cached_config = TinyConfig(Method::kIisan);
  Recommender cached(cached_config);
  cached->Prepare(states, {}, torch::kCPU);

  const auto ids = torch::arange(0, 31, torch::kInt64);
  EXPECT_TRUE(torch::allclose(uncached->EmbedItems(ids), cached->EmbedItems(ids), 1e-4, 1e-5));

  TrainOptions options;
  options.batch_size = 8;
  options.epochs = 2;
  options.lr = {1e-2, 1e-2, 1e-2, 1e-2, 1e-2};
  std::vector<double> losses_uncached, losses_cached;
  torch::manual_seed(3);
  Trainer(dataset, uncached, options).Fit([&](const EpochRecord& r) { losses_uncached.push_back(r.train_loss); });
  torch::manual_seed(3);
  Trainer(dataset, cached, options).Fit([&](const EpochRecord& r) { losses_cached.push_back(r.train_loss); });
  ASSERT_EQ(losses_uncached.size(), 2u);
  for (size_t i = 0; i < losses_cached.size(); ++i) EXPECT_NEAR(losses_uncached[i], losses_cached[i], 1e-4);
}

}  // namespace
}  // namespace iisan::train
