// Flattening RankingMetrics into one vector of sums for a single all-reduce.
#include "distributed/metric_reduction.h"

#include <string>

#include <torch/torch.h>

namespace iisan::distributed {

std::vector<double> AllReduceSum(Communicator& comm, std::span<const double> values) {
  auto tensor = torch::tensor(std::vector<double>(values.begin(), values.end()), torch::kFloat64).to(comm.device());
  comm.AllReduce(tensor, ReduceOp::kSum);
  tensor = tensor.to(torch::kCPU);
  return std::vector<double>(tensor.data_ptr<double>(), tensor.data_ptr<double>() + tensor.numel());
}

train::RankingMetrics ReduceRankingMetrics(Communicator& comm, const train::RankingMetrics& local,
                                           int64_t expected_users) {
  std::vector<double> sums(local.hit_sum.begin(), local.hit_sum.end());
  sums.insert(sums.end(), local.ndcg_sum.begin(), local.ndcg_sum.end());
  sums.push_back(static_cast<double>(local.users));
  const auto total = AllReduceSum(comm, sums);

  train::RankingMetrics reduced(local.ks);
  const size_t k = local.ks.size();
  reduced.hit_sum.assign(total.begin(), total.begin() + k);
  reduced.ndcg_sum.assign(total.begin() + k, total.begin() + 2 * k);
  reduced.users = static_cast<int64_t>(total.back());
  if (reduced.users != expected_users) {
    throw EvaluationCoverageError("rank " + std::to_string(comm.rank()) + ": the ranks evaluated " +
                                  std::to_string(reduced.users) + " users in total, expected " +
                                  std::to_string(expected_users) + " (a user missed or counted twice)");
  }
  return reduced;
}

}  // namespace iisan::distributed
