// Full-ranking evaluation (IISAN.md §3.6): every user's target is ranked against all N items,
// the user's history excluded; HR@K and NDCG@K for each K. Sums and counts are kept apart from
// the means so that shards of users can be reduced across ranks without counting anyone twice.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

namespace iisan::train {

struct RankingMetrics {
  explicit RankingMetrics(std::vector<int> ks = {5, 10, 20});

  std::vector<int> ks;
  std::vector<double> hit_sum;   // per K: users whose target ranked within K
  std::vector<double> ndcg_sum;  // per K: sum of 1/log2(rank + 1) over those users
  int64_t users = 0;

  double hr(int k) const;
  double ndcg(int k) const;
  void Merge(const RankingMetrics& other);
  // {"HR@5": .., "NDCG@5": .., ..., "users": n}, fractions in [0, 1].
  nlohmann::ordered_json ToJson() const;
};

// Ranks of each user's target among items 1..N. `scores` is [U, N+1] (column 0 = padding,
// never ranked); `excluded[u]` are item ids set to -inf before ranking. A target that is itself
// excluded (it repeats an item of the history) gets the worst rank, N + 1: a miss at every K, as
// in the reference. Ties are broken by item id, lower first, so that equal scores (e.g. the
// popularity baseline) rank deterministically. A target whose score is NaN gets the worst rank
// too: a non-finite model never scores a hit.
torch::Tensor TargetRanks(const torch::Tensor& scores, std::span<const int32_t> targets,
                          std::span<const std::vector<int32_t>> excluded);

void AccumulateRanks(const torch::Tensor& ranks, RankingMetrics& metrics);

}  // namespace iisan::train
