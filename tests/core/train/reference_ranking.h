// The ranking rules of core/train/ranking.h written out per user, one score at a time, for the
// tests that check the vectorised, chunked evaluation against them.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

#include "core/train/ranking.h"

namespace iisan::train::testing {

// The rank of `target` among the columns of one user's scores [N+1]: the padding column 0 and
// the excluded items score -inf; an excluded target, or one scoring NaN, ranks last (N + 1);
// otherwise 1 + the columns that score higher, or the same with a lower id.
inline int64_t ReferenceRank(std::vector<float> scores, int32_t target, std::span<const int32_t> excluded) {
  const int64_t columns = static_cast<int64_t>(scores.size());
  const float neg_inf = -std::numeric_limits<float>::infinity();
  scores[0] = neg_inf;
  bool target_excluded = false;
  for (int32_t item : excluded) {
    scores[item] = neg_inf;
    target_excluded = target_excluded || item == target;
  }
  const float t = scores[target];
  if (target_excluded || std::isnan(t)) return columns;
  int64_t rank = 1;
  for (int64_t j = 0; j < columns; ++j) rank += scores[j] > t || (scores[j] == t && j < target);
  return rank;
}

// HR@K and NDCG@K sums of `ranks`, user by user.
inline RankingMetrics ReferenceMetrics(std::span<const int64_t> ranks, const std::vector<int>& ks) {
  RankingMetrics metrics(ks);
  for (int64_t rank : ranks) {
    for (size_t i = 0; i < ks.size(); ++i) {
      if (rank > ks[i]) continue;
      metrics.hit_sum[i] += 1.0;
      metrics.ndcg_sum[i] += 1.0 / std::log2(static_cast<double>(rank) + 1.0);
    }
  }
  metrics.users = static_cast<int64_t>(ranks.size());
  return metrics;
}

}  // namespace iisan::train::testing
