// Which users each rank trains on at each step, and which it evaluates.
//
// Training. Every epoch starts from the same seeded permutation of the users as the
// single-process trainer (train::SeededPermutation(users, seed + epoch)), and step s covers the
// same global batch of users in both modes: positions [s*B*W, (s+1)*B*W) of that permutation,
// B being the per-rank batch size and W the world size. The modes differ in how a global batch
// is split among the ranks:
//
//  - kBalanced (default): users are dealt in groups of W consecutive users of the permutation,
//    the heaviest user of a group (by interactions) to the rank with the least interactions so
//    far. Every rank gets one user per group, so user counts differ by at most one, and after
//    every group the ranks' interaction totals differ by at most the heaviest user's.
//  - kExactGlobalOrder: rank r takes the r-th contiguous slice of the global batch, so the
//    concatenation of the ranks' batches in rank order IS the single-process batch, in its
//    order. Needed where the loss couples the rows of a batch (IISAN's in-batch negatives):
//    equivalence with one process then also needs the batch's item embeddings gathered in
//    rank order (AllGatherWithGradient, all_gather_autograd.h). For a loss that is a mean over
//    independent rows, both modes are equivalent.
//
// Both modes give every rank the same number of steps, ceil(users / (B*W)), so no collective
// waits on a rank that ran out of data; a rank's batch may be short or, in the last step, empty
// (it must still call GradientSynchronizer::Prepare()/Finish()). The gradient then equals one
// process's on a global batch of B*W users only with the weighting of LocalShare() below.
//
// Evaluation. EvaluationRange() splits users into contiguous ranges, one per rank, that cover
// every user exactly once; the ranks' metric sums are then reduced (metric_reduction.h).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

namespace iisan::distributed {

enum class ShardingMode { kBalanced, kExactGlobalOrder };

struct ShardingOptions {
  ShardingMode mode = ShardingMode::kBalanced;
  int64_t batch_size = 64;  // per rank
  uint64_t seed = 12345;    // the trainer's seed: epoch e uses seed + e, as in one process
};

// One epoch's assignment of users to (step, rank).
class EpochPlan {
 public:
  int64_t steps() const { return steps_; }
  int world_size() const { return world_size_; }
  // Users of `rank` at `step` (possibly empty).
  std::span<const int64_t> batch(int64_t step, int rank) const;
  // All ranks' users at `step`, in rank order.
  std::vector<int64_t> global_batch(int64_t step) const;
  // Every batch of `rank`, in step order.
  std::vector<std::vector<int64_t>> batches_of(int rank) const;

 private:
  friend class UserSharder;
  int world_size_ = 1;
  int64_t steps_ = 0;
  std::vector<int64_t> users_;    // batches laid out by step, then rank
  std::vector<int64_t> offsets_;  // steps * world + 1 boundaries into users_
};

class UserSharder {
 public:
  // interactions[u]: user u's training interactions (its cost); every user is sharded.
  UserSharder(std::vector<int64_t> interactions, int world_size, ShardingOptions options);

  // Deterministic: the same arguments give the same plan on every rank and every run.
  EpochPlan Plan(int epoch) const;

 private:
  std::vector<int64_t> interactions_;
  int world_size_;
  ShardingOptions options_;
};

// The share that `rank` passes to GradientSynchronizer::Prepare() at `step` so that the
// summed gradient is the mean over the global batch's rows: rows(rank's users) / rows(all
// users of the step), where rows(u) counts what the loss averages over for user u. 0 when the
// step has no rows at all.
double LocalShare(const EpochPlan& plan, int64_t step, int rank, const std::function<double(int64_t user)>& rows);

// Users [begin, end) that `rank` evaluates: contiguous, sizes differing by at most one.
struct UserRange {
  int64_t begin = 0;
  int64_t end = 0;
};
UserRange EvaluationRange(int64_t users, int world_size, int rank);

}  // namespace iisan::distributed
