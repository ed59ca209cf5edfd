// The differentiable all-gather: ranks that each score their rows against the gathered batch
// (an in-batch softmax) get exactly one process's gradients.
#include "distributed/all_gather_autograd.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tests/distributed/run_ranks.h"

namespace iisan::distributed {
namespace {

// Mean cross-entropy of each row of `users` against all `items`, the positive of row i being
// item offset + i: the shape of IISAN's in-batch loss.
torch::Tensor InBatchLoss(const torch::Tensor& users, const torch::Tensor& items, int64_t offset) {
  const auto logits = torch::matmul(users, items.t());
  const auto targets = torch::arange(offset, offset + users.size(0), torch::kInt64);
  return torch::nn::functional::cross_entropy(logits, targets);
}

TEST(AllGatherAutogradTest, RanksGetOneProcesssGradients) {
  const int world = 3;
  const int64_t rows = 4, dim = 5;
  torch::manual_seed(1);
  const auto all_users = torch::randn({world * rows, dim});
  const auto all_items = torch::randn({world * rows, dim});
  auto users = all_users.clone().requires_grad_();
  auto items = all_items.clone().requires_grad_();
  InBatchLoss(users, items, 0).backward();

  std::vector<torch::Tensor> user_grads(world), item_grads(world);
  testing::RunRanks(world, [&](Communicator& comm) {
    const int64_t begin = comm.rank() * rows;
    auto my_users = all_users.narrow(0, begin, rows).clone().requires_grad_();
    auto my_items = all_items.narrow(0, begin, rows).clone().requires_grad_();
    const auto gathered = AllGatherWithGradient(comm, my_items).reshape({-1, dim});
    const double share = 1.0 / world;  // equal rows on every rank
    (share * InBatchLoss(my_users, gathered, begin)).backward();
    user_grads[comm.rank()] = my_users.grad();
    item_grads[comm.rank()] = my_items.grad();
  });
  EXPECT_TRUE(torch::allclose(torch::cat(user_grads), users.grad(), 1e-5, 1e-7));
  EXPECT_TRUE(torch::allclose(torch::cat(item_grads), items.grad(), 1e-5, 1e-7));
}

}  // namespace
}  // namespace iisan::distributed
