// Gradient synchronisation with threads as ranks: bucket layout, hooks, weighting, and exact
// equivalence of N ranks with one process on the tiny problem.
#include "distributed/gradient_synchronizer.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "distributed/parameter_sync.h"
#include "tests/distributed/run_ranks.h"
#include "tests/distributed/tiny_problem.h"

namespace iisan::distributed {
namespace {

using testing::RunRanks;

// A frozen "backbone" and a trainable "side network", like IISAN's.
struct Model : torch::nn::Module {
  Model() {
    torch::manual_seed(3);
    backbone = register_module("backbone", torch::nn::Linear(6, 6));
    side1 = register_module("side1", torch::nn::Linear(6, 32));
    side2 = register_module("side2", torch::nn::Linear(32, 32));
    head = register_module("head", torch::nn::Linear(32, 1));
    for (auto& p : backbone->parameters()) p.set_requires_grad(false);
  }
  torch::Tensor forward(const torch::Tensor& x) {
    return head(torch::relu(side2(torch::relu(side1(backbone(x))))));
  }
  torch::nn::Linear backbone{nullptr}, side1{nullptr}, side2{nullptr}, head{nullptr};
};

int64_t TrainableBytes(Model& model) {
  int64_t bytes = 0;
  for (const auto& p : model.parameters()) {
    if (p.requires_grad()) bytes += p.numel() * static_cast<int64_t>(p.element_size());
  }
  return bytes;
}

TEST(GradientSynchronizerTest, BucketsCoverExactlyTheTrainableParameters) {
  auto comms = MakeInProcessWorld(1);
  Model model;
  GradientSynchronizer sync(*comms[0], model.parameters(), /*bucket_bytes=*/1024);
  EXPECT_EQ(sync.parameters().size(), 6u);  // side1, side2, head: weight and bias each
  EXPECT_GT(sync.buckets().size(), 1u);
  std::vector<int> covered(sync.parameters().size(), 0);
  for (const auto& bucket : sync.buckets()) {
    int64_t offset = 0;
    for (size_t k = 0; k < bucket.members.size(); ++k) {
      EXPECT_EQ(bucket.offsets[k], offset);
      offset += sync.parameters()[bucket.members[k]].numel();
      covered[bucket.members[k]]++;
    }
    EXPECT_EQ(bucket.numel, offset);
  }
  EXPECT_TRUE(std::all_of(covered.begin(), covered.end(), [](int n) { return n == 1; }));
  EXPECT_EQ(sync.bytes_per_step(), TrainableBytes(model));
  // Reverse registration order: the head's bias, the last parameter, comes first.
  EXPECT_TRUE(sync.parameters()[0].is_same(model.head->bias));
}

TEST(GradientSynchronizerTest, AveragesGradientsAcrossRanksAndStartsBucketsDuringBackward) {
  const int world = 3;
  // Models and inputs are made here, not in the rank threads: torch's global generator is shared.
  std::vector<std::shared_ptr<Model>> models;
  std::vector<torch::Tensor> inputs, local_grads;
  for (int r = 0; r < world; ++r) {
    models.push_back(std::make_shared<Model>());
    inputs.push_back(torch::randn({5, 6}));
    auto alone = models[r]->forward(inputs[r]).pow(2).mean();
    local_grads.push_back(torch::autograd::grad({alone}, {models[r]->side2->weight})[0]);
  }
  std::vector<torch::Tensor> synced(world);
  std::vector<SyncStats> stats(world);
  RunRanks(world, [&](Communicator& comm) {
    auto& model = *models[comm.rank()];
    GradientSynchronizer sync(comm, model.parameters(), /*bucket_bytes=*/2048);
    sync.Prepare();
    model.forward(inputs[comm.rank()]).pow(2).mean().backward();
    stats[comm.rank()] = sync.Finish();
    synced[comm.rank()] = model.side2->weight.grad().clone();
    EXPECT_FALSE(model.backbone->weight.grad().defined()) << "frozen parameters are not synchronised";
  });
  const auto expected = (local_grads[0] + local_grads[1] + local_grads[2]) / 3;
  for (int r = 0; r < world; ++r) {
    EXPECT_TRUE(torch::allclose(synced[r], expected, 1e-6, 1e-7)) << "rank " << r;
    EXPECT_TRUE(torch::equal(synced[r], synced[0])) << "ranks must agree bitwise";
    EXPECT_GT(stats[r].buckets_started_in_backward, 0) << "hooks should start buckets before Finish()";
    EXPECT_EQ(stats[r].bytes, stats[0].bytes);
    EXPECT_EQ(stats[r].buckets, stats[0].buckets);
  }
}

TEST(GradientSynchronizerTest, RankWithoutGradientsContributesZeros) {
  std::vector<std::shared_ptr<Model>> models = {std::make_shared<Model>(), std::make_shared<Model>()};
  std::vector<torch::Tensor> synced(2);
  torch::Tensor rank0_grad;
  RunRanks(2, [&](Communicator& comm) {
    auto& model = *models[comm.rank()];
    GradientSynchronizer sync(comm, model.parameters());
    // Rank 0 holds every row of the step (share 1), rank 1 an empty batch (share 0).
    sync.Prepare(comm.rank() == 0 ? 1.0 : 0.0);
    if (comm.rank() == 0) {
      model.forward(torch::ones({2, 6})).sum().backward();
      rank0_grad = model.head->weight.grad().clone();
    }
    sync.Finish();
    synced[comm.rank()] = model.head->weight.grad().clone();
  });
  EXPECT_TRUE(torch::equal(synced[0], rank0_grad));
  EXPECT_TRUE(torch::equal(synced[1], rank0_grad));
}

TEST(GradientSynchronizerTest, MisuseIsLoud) {
  auto comms = MakeInProcessWorld(1);
  Model model;
  GradientSynchronizer sync(*comms[0], model.parameters());
  EXPECT_THROW(sync.Finish(), std::logic_error);
  EXPECT_THROW(model.forward(torch::ones({1, 6})).sum().backward(), std::exception) << "backward without Prepare()";
  EXPECT_THROW(sync.Prepare(-1.0), std::invalid_argument);
  sync.Prepare();
  EXPECT_THROW(sync.Prepare(), std::logic_error);
}

TEST(GradientSynchronizerTest, RanksTrainExactlyLikeOneProcess) {
  const testing::TinyProblem problem(37);
  const int world = 3, per_rank_batch = 4, epochs = 3;
  auto reference = testing::MakeTinyModel();
  ShardingOptions single;
  single.batch_size = per_rank_batch * world;
  testing::TrainTiny(problem, reference, UserSharder(problem.rows, 1, single), epochs, 0, nullptr);
  const auto expected = testing::FlatParameters(reference);

  {
    // Ranks other than 0 start from other weights: the initial broadcast must fix that.
    std::vector<torch::nn::Sequential> models;
    for (int r = 0; r < world; ++r) {
      models.push_back(testing::MakeTinyModel());
      torch::NoGradGuard no_grad;
      for (auto& p : models[r]->parameters()) p.add_(0.1 * r);
    }
    std::vector<torch::Tensor> trained(world);
    RunRanks(world, [&](Communicator& comm) {
      auto& model = models[comm.rank()];
      BroadcastTensors(comm, model->parameters());
      GradientSynchronizer sync(comm, model->parameters(), /*bucket_bytes=*/256);
      ShardingOptions options;
        options.batch_size = per_rank_batch * world;
      testing::TrainTiny(problem, model, UserSharder(problem.rows, world, options), epochs, comm.rank(), &sync);
      CheckTensorsInSync(comm, model->parameters(), {}, /*step=*/-1);
      trained[comm.rank()] = testing::FlatParameters(model);
    });
    for (int r = 0; r < world; ++r) {
      EXPECT_LE((trained[r] - expected).abs().max().item<float>(), 1e-5f) << "rank " << r;
      EXPECT_TRUE(torch::equal(trained[r], trained[0]));
    }
  }
}

}  // namespace
}  // namespace iisan::distributed
