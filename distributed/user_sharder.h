// The job's one sharding policy: which users each rank trains on at each step, and which it
// evaluates. The trainer reaches it through DataParallel::Deal (core/train/data_parallel.h),
// so the code that these functions' tests check is the code every data-parallel run uses.
//
// Training. Epoch e visits the users in the single-process order, the seeded permutation
// train::SeededPermutation(users, seed + e), cut into global batches of `batch_size` users:
// the batches one process trains on. DealUsers splits each global batch among the W ranks:
// the users sorted by cost (training interactions), heaviest first (stable), then dealt in
// snake order (ranks 0..W-1, then W-1..0, ...). User counts differ by at most one and the
// ranks' interactions nearly balance. Every rank runs every step, ceil(users / batch_size) per
// epoch, so no collective waits on a rank that ran out of data; a rank's share may be empty
// when a batch has fewer users than ranks (the trainer pads every share to one row count).
//
// Because the in-batch softmax couples the rows of a batch, the trainer all-gathers the item
// embeddings of every rank's share (all_gather_autograd.h); for a loss that is a mean over
// independent rows, LocalShare() weights each rank's gradient so that their sum is the
// one-process gradient.
//
// Evaluation. EvaluationRange() splits users into contiguous ranges, one per rank, that cover
// every user exactly once; the ranks' metric sums are then reduced (metric_reduction.h).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

namespace iisan::distributed {

// One global batch dealt to `world_size` ranks (see above); costs[i] is users[i]'s cost.
std::vector<std::vector<int64_t>> DealUsers(std::span<const int64_t> users, std::span<const int64_t> costs,
                                            int world_size);

struct ShardingOptions {
  int64_t batch_size = 64;  // the global batch: users per step over all ranks
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

  // Deterministic: the same arguments give the same plan on every rank and every run; each
  // step's shares are DealUsers of that step's global batch.
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
