// Vectorised full ranking on the scores' device: one pass of comparisons per chunk of users, no
// sort, and the metric sums as a histogram of the ranks.
#include "core/train/ranking.h"

#include <algorithm>
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

RankingTargets RankingTargets::To(const torch::Device& device) const {
  return {targets.to(device), target_excluded.to(device), excluded_positions.to(device), excluded_offsets, columns};
}

RankingTargets MakeRankingTargets(std::span<const int32_t> targets, std::span<const std::vector<int32_t>> excluded,
                                  int64_t columns) {
  const int64_t users = static_cast<int64_t>(targets.size());
  if (static_cast<int64_t>(excluded.size()) != users) {
    throw std::invalid_argument("MakeRankingTargets: " + std::to_string(users) + " targets but " +
                                std::to_string(excluded.size()) + " excluded lists");
  }
  auto out_of_range = [&](int64_t user, const char* what, int32_t item) {
    return std::invalid_argument("MakeRankingTargets: user " + std::to_string(user) + "'s " + what + " " +
                                 std::to_string(item) + " is not an item id of the " + std::to_string(columns) +
                                 " score columns");
  };
  auto target_ids = torch::empty({users}, torch::kInt64);
  auto target_excluded = torch::zeros({users}, torch::kBool);
  auto target_a = target_ids.accessor<int64_t, 1>();
  auto excluded_a = target_excluded.accessor<bool, 1>();
  std::vector<int64_t> positions, offsets = {0};
  offsets.reserve(users + 1);
  for (int64_t u = 0; u < users; ++u) {
    const int32_t target = targets[u];
    if (target < 1 || target >= columns) throw out_of_range(u, "target", target);
    target_a[u] = target;
    for (int32_t item : excluded[u]) {
      if (item < 0 || item >= columns) throw out_of_range(u, "excluded item", item);
      positions.push_back(u * columns + item);
      excluded_a[u] = excluded_a[u] || item == target;
    }
    offsets.push_back(static_cast<int64_t>(positions.size()));
  }
  auto position_tensor = torch::tensor(positions, torch::kInt64);
  return {target_ids, target_excluded, position_tensor, std::move(offsets), columns};
}

torch::Tensor RankTargets(torch::Tensor scores, const RankingTargets& targets, int64_t first) {
  const int64_t rows = scores.dim() == 2 ? scores.size(0) : -1, columns = targets.columns;
  if (rows < 0 || scores.size(1) != columns || first < 0 || first + rows > targets.size()) {
    throw std::invalid_argument("RankTargets: scores of shape " + c10::str(scores.sizes()) + " do not fit users [" +
                                std::to_string(first) + ", " + std::to_string(first + std::max<int64_t>(rows, 0)) +
                                ") of " + std::to_string(targets.size()) + " over " + std::to_string(columns) +
                                " columns");
  }
  if (scores.scalar_type() != torch::kFloat32 || scores.device() != targets.targets.device()) {
    throw std::invalid_argument("RankTargets: the scores must be float32 on " + targets.targets.device().str() +
                                ", got " + std::string(c10::toString(scores.scalar_type())) + " on " +
                                scores.device().str());
  }
  scores = scores.contiguous();
  const float neg_inf = -std::numeric_limits<float>::infinity();
  scores.select(1, 0).fill_(neg_inf);
  const int64_t begin = targets.excluded_offsets[first], end = targets.excluded_offsets[first + rows];
  if (end > begin) {
    scores.view({-1}).index_fill_(0, targets.excluded_positions.slice(0, begin, end) - first * columns, neg_inf);
  }
  const auto target = targets.targets.slice(0, first, first + rows).unsqueeze(1);
  const auto target_scores = scores.gather(1, target);
  // Item j ranks before the target when it scores higher, or the same with a lower id.
  auto before = scores.gt(target_scores);
  {
    auto ties = scores.eq(target_scores);
    ties.logical_and_(torch::arange(columns, target.options()).unsqueeze(0).lt(target));
    before.logical_or_(ties);
  }
  scores = torch::Tensor();  // the caller's scores: freed here unless the caller kept them
  const auto ranks = before.sum(1, /*keepdim=*/false, torch::kInt32).to(torch::kInt64) + 1;
  // A target whose score is NaN compares false with everything and would rank first: it ranks
  // last instead (behind all N items), so a diverged model scores no hits. NaN scores of other
  // items cannot push a finite target down (they compare false too), and +inf only ties. An
  // excluded target ranks last too: at -inf it would rank right behind the items left, a hit
  // whenever fewer than K of them remain.
  const auto worst =
      torch::isnan(target_scores.squeeze(1)).logical_or(targets.target_excluded.slice(0, first, first + rows));
  return ranks.masked_fill(worst, columns);
}

torch::Tensor TargetRanks(const torch::Tensor& scores, std::span<const int32_t> targets,
                          std::span<const std::vector<int32_t>> excluded) {
  const int64_t num_users = scores.size(0);
  if (static_cast<int64_t>(targets.size()) != num_users ||
      static_cast<int64_t>(excluded.size()) != num_users) {
    throw std::invalid_argument("TargetRanks: scores, targets and excluded disagree on users");
  }
  const auto ranking = MakeRankingTargets(targets, excluded, scores.size(1)).To(scores.device());
  return RankTargets(scores.to(torch::kFloat32, /*non_blocking=*/false, /*copy=*/true), ranking, 0);
}

RankAccumulator::RankAccumulator(std::vector<int> ks, const torch::Device& device) : ks_(std::move(ks)) {
  int max_k = 0;
  for (int k : ks_) {
    if (k < 1) throw std::invalid_argument("RankAccumulator: a cut-off K must be at least 1, got " + std::to_string(k));
    max_k = std::max(max_k, k);
  }
  counts_ = torch::zeros({max_k + 1}, torch::TensorOptions().dtype(torch::kInt64).device(device));
}

void RankAccumulator::Add(const torch::Tensor& ranks) {
  if (ranks.device() != counts_.device()) {
    throw std::invalid_argument("RankAccumulator: ranks on " + ranks.device().str() + ", the sums on " +
                                counts_.device().str());
  }
  // Ranks beyond max K all land in the last bucket: a miss at every K.
  const auto bucket = ranks.reshape({-1}).to(torch::kInt64).clamp(1, counts_.size(0)) - 1;
  counts_.index_add_(0, bucket, torch::ones_like(bucket));
  users_ += bucket.size(0);
}

RankingMetrics RankAccumulator::Result() const {
  const auto counts = counts_.to(torch::kCPU);
  const auto* count = counts.data_ptr<int64_t>();
  const int64_t max_k = counts.size(0) - 1;
  // hits[r], gains[r]: over the ranks 1..r.
  std::vector<double> hits(max_k + 1, 0.0), gains(max_k + 1, 0.0);
  for (int64_t r = 1; r <= max_k; ++r) {
    hits[r] = hits[r - 1] + static_cast<double>(count[r - 1]);
    gains[r] = gains[r - 1] + static_cast<double>(count[r - 1]) / std::log2(static_cast<double>(r) + 1.0);
  }
  RankingMetrics metrics(ks_);
  for (size_t i = 0; i < ks_.size(); ++i) {
    metrics.hit_sum[i] = hits[ks_[i]];
    metrics.ndcg_sum[i] = gains[ks_[i]];
  }
  metrics.users = users_;
  return metrics;
}

void AccumulateRanks(const torch::Tensor& ranks, RankingMetrics& metrics) {
  RankAccumulator accumulator(metrics.ks, ranks.device());
  accumulator.Add(ranks);
  metrics.Merge(accumulator.Result());
}

}  // namespace iisan::train
