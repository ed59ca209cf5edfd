// A tiny regression problem for 1-rank vs N-rank equivalence: users own unequal numbers of
// rows (so ranks' batches have unequal row counts and the gradient weighting matters), a small
// MLP, Adam, on CPU or a GPU. Shared by the in-process test and the multi-process worker.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include <torch/torch.h>

#include "distributed/gradient_synchronizer.h"
#include "distributed/user_sharder.h"

namespace iisan::distributed::testing {

struct TinyProblem {
  std::vector<int64_t> first_row;  // per user
  std::vector<int64_t> rows;       // per user: 1..4
  torch::Tensor x;                 // [total rows, 4]
  torch::Tensor y;                 // [total rows, 1]

  explicit TinyProblem(int64_t users, torch::Device device = torch::kCPU) {
    torch::manual_seed(7);
    int64_t total = 0;
    for (int64_t u = 0; u < users; ++u) {
      first_row.push_back(total);
      rows.push_back(1 + (u * 7) % 4);
      total += rows.back();
    }
    x = torch::randn({total, 4}).to(device);
    y = torch::sin(x.sum(1, true));
  }

  torch::Tensor RowsOf(std::span<const int64_t> users) const {
    std::vector<int64_t> index;
    for (int64_t u : users) {
      for (int64_t k = 0; k < rows[u]; ++k) index.push_back(first_row[u] + k);
    }
    return torch::tensor(index, torch::kInt64).to(x.device());
  }
};

inline torch::nn::Sequential MakeTinyModel(torch::Device device = torch::kCPU) {
  torch::manual_seed(11);
  torch::nn::Sequential model(torch::nn::Linear(4, 16), torch::nn::Tanh(), torch::nn::Linear(16, 1));
  model->to(device);
  return model;
}

inline torch::Tensor FlatParameters(torch::nn::Sequential& model) {
  std::vector<torch::Tensor> parts;
  for (const auto& p : model->parameters()) parts.push_back(p.detach().reshape(-1).cpu());
  return torch::cat(parts);
}

// Trains `epochs` epochs of `plan`s as `rank`. With `sync`, gradients are combined through it,
// weighted by the rank's share of the step's rows; without, this is the single-process loop.
inline void TrainTiny(const TinyProblem& problem, torch::nn::Sequential& model, const UserSharder& sharder,
                      int epochs, int rank, GradientSynchronizer* sync) {
  torch::optim::Adam optimizer(model->parameters(), torch::optim::AdamOptions(0.05));
  auto rows_of = [&](int64_t user) { return static_cast<double>(problem.rows[user]); };
  for (int epoch = 1; epoch <= epochs; ++epoch) {
    const auto plan = sharder.Plan(epoch);
    for (int64_t step = 0; step < plan.steps(); ++step) {
      optimizer.zero_grad();
      const auto users = plan.batch(step, rank);
      if (sync) sync->Prepare(LocalShare(plan, step, rank, rows_of));
      if (!users.empty()) {
        const auto index = problem.RowsOf(users);
        const auto loss = torch::mse_loss(model->forward(problem.x.index_select(0, index)), problem.y.index_select(0, index));
        loss.backward();
      }
      if (sync) sync->Finish();
      optimizer.step();
    }
  }
}

}  // namespace iisan::distributed::testing
