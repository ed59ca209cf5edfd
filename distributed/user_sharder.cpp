// Seeded, balanced assignment of users to ranks and steps.
#include "distributed/user_sharder.h"

#include <algorithm>
#include <numeric>
#include <stdexcept>
#include <string>

#include "core/train/trainer.h"

namespace iisan::distributed {
namespace {

// Near-equal contiguous split of n items into `parts`: part p gets [begin, begin + size).
UserRange SplitEvenly(int64_t n, int parts, int part) {
  const int64_t base = n / parts, extra = n % parts;
  const int64_t begin = part * base + std::min<int64_t>(part, extra);
  return {begin, begin + base + (part < extra ? 1 : 0)};
}

}  // namespace

std::span<const int64_t> EpochPlan::batch(int64_t step, int rank) const {
  if (step < 0 || step >= steps_ || rank < 0 || rank >= world_size_) {
    throw std::out_of_range("EpochPlan: no step " + std::to_string(step) + " / rank " + std::to_string(rank));
  }
  const size_t cell = static_cast<size_t>(step * world_size_ + rank);
  return std::span<const int64_t>(users_).subspan(offsets_[cell], offsets_[cell + 1] - offsets_[cell]);
}

std::vector<int64_t> EpochPlan::global_batch(int64_t step) const {
  std::vector<int64_t> users;
  for (int r = 0; r < world_size_; ++r) {
    const auto part = batch(step, r);
    users.insert(users.end(), part.begin(), part.end());
  }
  return users;
}

std::vector<std::vector<int64_t>> EpochPlan::batches_of(int rank) const {
  std::vector<std::vector<int64_t>> batches;
  for (int64_t s = 0; s < steps_; ++s) {
    const auto part = batch(s, rank);
    batches.emplace_back(part.begin(), part.end());
  }
  return batches;
}

UserSharder::UserSharder(std::vector<int64_t> interactions, int world_size, ShardingOptions options)
    : interactions_(std::move(interactions)), world_size_(world_size), options_(options) {
  if (world_size_ < 1) throw std::invalid_argument("UserSharder: world size must be >= 1");
  if (options_.batch_size < 1) throw std::invalid_argument("UserSharder: batch size must be >= 1");
}

EpochPlan UserSharder::Plan(int epoch) const {
  const int64_t users = static_cast<int64_t>(interactions_.size());
  const int W = world_size_;
  const int64_t global = options_.batch_size * W;
  const auto order = train::SeededPermutation(users, options_.seed + static_cast<uint64_t>(epoch));

  EpochPlan plan;
  plan.world_size_ = W;
  plan.steps_ = (users + global - 1) / global;
  plan.offsets_.push_back(0);
  std::vector<int64_t> load(W, 0);  // kBalanced: interactions dealt to each rank so far
  std::vector<std::vector<int64_t>> per_rank(W);
  for (int64_t step = 0; step < plan.steps_; ++step) {
    const int64_t begin = step * global, end = std::min(users, begin + global);
    for (auto& part : per_rank) part.clear();
    if (options_.mode == ShardingMode::kExactGlobalOrder) {
      for (int r = 0; r < W; ++r) {
        const auto slice = SplitEvenly(end - begin, W, r);
        per_rank[r].assign(order.begin() + begin + slice.begin, order.begin() + begin + slice.end);
      }
    } else {
      // `begin` is a multiple of W, so groups of W line up across steps.
      for (int64_t group = begin; group < end; group += W) {
        std::vector<int64_t> members(order.begin() + group, order.begin() + std::min(end, group + W));
        std::sort(members.begin(), members.end(), [&](int64_t a, int64_t b) {
          return interactions_[a] != interactions_[b] ? interactions_[a] > interactions_[b] : a < b;
        });
        std::vector<int> ranks(W);
        std::iota(ranks.begin(), ranks.end(), 0);
        std::sort(ranks.begin(), ranks.end(), [&](int a, int b) { return load[a] != load[b] ? load[a] < load[b] : a < b; });
        for (size_t k = 0; k < members.size(); ++k) {
          per_rank[ranks[k]].push_back(members[k]);
          load[ranks[k]] += interactions_[members[k]];
        }
      }
    }
    for (const auto& part : per_rank) {
      plan.users_.insert(plan.users_.end(), part.begin(), part.end());
      plan.offsets_.push_back(static_cast<int64_t>(plan.users_.size()));
    }
  }
  return plan;
}

double LocalShare(const EpochPlan& plan, int64_t step, int rank, const std::function<double(int64_t user)>& rows) {
  double local = 0.0, total = 0.0;
  for (int r = 0; r < plan.world_size(); ++r) {
    double sum = 0.0;
    for (int64_t user : plan.batch(step, r)) sum += rows(user);
    if (r == rank) local = sum;
    total += sum;
  }
  return total > 0.0 ? local / total : 0.0;
}

UserRange EvaluationRange(int64_t users, int world_size, int rank) {
  if (world_size < 1 || rank < 0 || rank >= world_size) {
    throw std::invalid_argument("EvaluationRange: rank " + std::to_string(rank) + " of " + std::to_string(world_size));
  }
  return SplitEvenly(users, world_size, rank);
}

}  // namespace iisan::distributed
