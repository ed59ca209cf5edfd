// Vectorised full ranking: one pass of comparisons per batch of users, no sort.
#include "core/train/ranking.h"

#include <cmath>
#include <limits>
#include <string>

#include <torch/torch.h>

namespace iisan::train {

RankingMetrics::RankingMetrics(std::vector<int> ks_in)
    : ks(std::move(ks_in)), hit_sum(ks.size(), 0.0), ndcg_sum(ks.size(), 0.0) {}

double RankingMetrics::hr(int k) const {
  for (size_t i = 0; i < ks.size(); ++i) {
    if (ks[i] == k) return users ? hit_sum[i] / static_cast<double>(users) : 0.0;
  }
  throw std::out_of_range("HR@" + std::to_string(k) + " was not computed");
}

double RankingMetrics::ndcg(int k) const {
  for (size_t i = 0; i < ks.size(); ++i) {
    if (ks[i] == k) return users ? ndcg_sum[i] / static_cast<double>(users) : 0.0;
  }
  throw std::out_of_range("NDCG@" + std::to_string(k) + " was not computed");
}

void RankingMetrics::Merge(const RankingMetrics& other) {
  if (other.ks != ks) throw std::invalid_argument("RankingMetrics::Merge: different K lists");
  for (size_t i = 0; i < ks.size(); ++i) {
    hit_sum[i] += other.hit_sum[i];
    ndcg_sum[i] += other.ndcg_sum[i];
  }
  users += other.users;
}

nlohmann::ordered_json RankingMetrics::ToJson() const {
  nlohmann::ordered_json out;
  for (size_t i = 0; i < ks.size(); ++i) {
    out["HR@" + std::to_string(ks[i])] = hr(ks[i]);
    out["NDCG@" + std::to_string(ks[i])] = ndcg(ks[i]);
  }
  out["users"] = users;
  return out;
}

torch::Tensor TargetRanks(const torch::Tensor& scores_in, std::span<const int32_t> targets,
                          std::span<const std::vector<int32_t>> excluded) {
  const int64_t num_users = scores_in.size(0);
  if (static_cast<int64_t>(targets.size()) != num_users ||
      static_cast<int64_t>(excluded.size()) != num_users) {
    throw std::invalid_argument("TargetRanks: scores, targets and excluded disagree on users");
  }
  torch::Tensor scores = scores_in.to(torch::kFloat32).clone();
  const float neg_inf = -std::numeric_limits<float>::infinity();
  scores.select(1, 0).fill_(neg_inf);

  std::vector<int64_t> rows, cols;
  std::vector<uint8_t> target_excluded(num_users, 0);
  for (int64_t u = 0; u < num_users; ++u) {
    for (int32_t item : excluded[u]) {
      rows.push_back(u);
      cols.push_back(item);
      target_excluded[u] |= item == targets[u];
    }
  }
  if (!rows.empty()) {
    auto options = torch::TensorOptions().dtype(torch::kInt64);
    auto row_index = torch::from_blob(rows.data(), {static_cast<int64_t>(rows.size())}, options)
                         .to(scores.device());
    auto col_index = torch::from_blob(cols.data(), {static_cast<int64_t>(cols.size())}, options)
                         .to(scores.device());
    scores.index_put_({row_index, col_index}, torch::full({}, neg_inf, scores.options()));
  }

  std::vector<int64_t> target_ids(targets.begin(), targets.end());
  auto target_index = torch::from_blob(target_ids.data(), {num_users, 1},
                                       torch::TensorOptions().dtype(torch::kInt64))
                          .to(scores.device());
  auto target_scores = scores.gather(1, target_index);
  auto item_index = torch::arange(scores.size(1), target_index.options()).unsqueeze(0);
  auto before = (scores > target_scores) |
                ((scores == target_scores) & (item_index < target_index));
  auto ranks = before.sum(1) + 1;
  // A target whose score is NaN compares false with everything and would rank first: it ranks
  // last instead (behind all N items), so a diverged model scores no hits. NaN scores of other
  // items cannot push a finite target down (they compare false too), and +inf only ties. An
  // excluded target ranks last too: at -inf it would rank right behind the items left, a hit
  // whenever fewer than K of them remain.
  const auto worst = torch::full_like(ranks, scores.size(1));
  const auto excluded_target =
      torch::from_blob(target_excluded.data(), {num_users}, torch::TensorOptions().dtype(torch::kUInt8))
          .to(torch::kBool)
          .to(ranks.device());
  return torch::where(torch::isnan(target_scores.squeeze(1)).logical_or(excluded_target), worst, ranks);
}

void AccumulateRanks(const torch::Tensor& ranks_in, RankingMetrics& metrics) {
  auto ranks = ranks_in.to(torch::kCPU, torch::kFloat64);
  for (size_t i = 0; i < metrics.ks.size(); ++i) {
    auto hit = ranks <= metrics.ks[i];
    metrics.hit_sum[i] += hit.sum().item<double>();
    metrics.ndcg_sum[i] +=
        torch::where(hit, 1.0 / torch::log2(ranks + 1.0), torch::zeros_like(ranks)).sum().item<double>();
  }
  metrics.users += ranks.size(0);
}

}  // namespace iisan::train
