// Full-ranking evaluation (IISAN.md §3.6): every user's target is ranked against all N items,
// the user's history excluded; HR@K and NDCG@K for each K. Sums and counts are kept apart from
// the means so that shards of users can be reduced across ranks without counting anyone twice.
//
// Ranks and their metric sums stay on the scores' device: RankTargets and RankAccumulator::Add
// queue work without synchronising, and RankAccumulator::Result reads the device once.
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

// What the ranking of U users needs besides their scores, as tensors on one device: each user's
// target and the items left out of their ranking. Built once (MakeRankingTargets) and sliced by
// RankTargets, so that ranking a chunk of users reads no host data but two offsets.
struct RankingTargets {
  torch::Tensor targets;          // [U] int64, item ids 1..N
  torch::Tensor target_excluded;  // [U] bool: the target is one of the user's excluded items
  // The excluded (user u, item i) pairs as positions u * columns + i of a [U, columns] score
  // matrix, grouped by user: user u's are [excluded_offsets[u], excluded_offsets[u + 1]).
  torch::Tensor excluded_positions;       // [E] int64
  std::vector<int64_t> excluded_offsets;  // U + 1 entries, on the host
  int64_t columns = 0;                    // N + 1: the padding item 0 and items 1..N

  int64_t size() const { return targets.size(0); }
  RankingTargets To(const torch::Device& device) const;
};

// On the CPU: `targets[u]` is user u's target item, `excluded[u]` the item ids left out of their
// ranking, `columns` = N + 1. std::invalid_argument, naming the user, for an id outside 0..N (a
// target outside 1..N) or lists of different lengths.
RankingTargets MakeRankingTargets(std::span<const int32_t> targets, std::span<const std::vector<int32_t>> excluded,
                                  int64_t columns);

// Ranks [C] (int64, on the scores' device) of the targets of users [first, first + C) of
// `targets` among items 1..N, from their scores [C, N+1] (column 0 = padding, never ranked).
// `scores` must be a float32 tensor on the targets' device that the caller hands over: it is
// overwritten (excluded items set to -inf) and released before the counting, which keeps the
// memory of a chunk at about kRankBytesPerScore bytes per score. No host synchronisation.
//
// A target that is itself excluded (it repeats an item of the history) gets the worst rank,
// N + 1: a miss at every K, as in the reference. Ties are broken by item id, lower first, so
// that equal scores (e.g. the popularity baseline) rank deterministically. A target whose score
// is NaN gets the worst rank too: a non-finite model never scores a hit.
torch::Tensor RankTargets(torch::Tensor scores, const RankingTargets& targets, int64_t first);

// Peak device memory of RankTargets per score: the float32 score and the three boolean masks
// alive at once (the count of the one left, in int32, fits in what the others freed).
inline constexpr int64_t kRankBytesPerScore = 8;

// The same for scores that the caller keeps ([U, N+1], any floating type and device; copied).
torch::Tensor TargetRanks(const torch::Tensor& scores, std::span<const int32_t> targets,
                          std::span<const std::vector<int32_t>> excluded);

// HR@K and NDCG@K sums of ranks (integers >= 1) added on the ranks' device: a histogram of the
// ranks up to max K, so that the sums do not depend on how the users were chunked. Result()
// copies it to the host once and turns it into metric sums.
class RankAccumulator {
 public:
  RankAccumulator(std::vector<int> ks, const torch::Device& device);
  void Add(const torch::Tensor& ranks);  // [U] integer ranks on the accumulator's device
  RankingMetrics Result() const;

 private:
  std::vector<int> ks_;
  torch::Tensor counts_;  // [max K + 1] int64: counts_[r - 1] users of rank r <= max K; last: the rest
  int64_t users_ = 0;
};

void AccumulateRanks(const torch::Tensor& ranks, RankingMetrics& metrics);

}  // namespace iisan::train
