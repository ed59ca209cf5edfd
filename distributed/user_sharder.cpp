// The sharding policy: seeded global batches dealt to the ranks in snake order of their cost.
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

std::vector<std::vector<int64_t>> DealUsers(std::span<const int64_t> users, std::span<const int64_t> costs,
                                            int world_size) {
  if (world_size < 1) throw std::invalid_argument("DealUsers: world size must be >= 1");
  if (costs.size() != users.size()) throw std::invalid_argument("DealUsers: one cost per user");
  std::vector<size_t> by_cost(users.size());
  std::iota(by_cost.begin(), by_cost.end(), size_t{0});
  std::stable_sort(by_cost.begin(), by_cost.end(), [&](size_t a, size_t b) { return costs[a] > costs[b]; });
  std::vector<std::vector<int64_t>> shares(world_size);
  for (size_t i = 0; i < by_cost.size(); ++i) {
    const int64_t round = static_cast<int64_t>(i) / world_size, position = static_cast<int64_t>(i) % world_size;
    const int64_t target = round % 2 == 0 ? position : world_size - 1 - position;
    shares[target].push_back(users[by_cost[i]]);
  }
  return shares;
}

UserSharder::UserSharder(std::vector<int64_t> interactions, int world_size, ShardingOptions options)
    : interactions_(std::move(interactions)), world_size_(world_size), options_(options) {
  if (world_size_ < 1) throw std::invalid_argument("UserSharder: world size must be >= 1");
  if (options_.batch_size < 1) throw std::invalid_argument("UserSharder: batch size must be >= 1");
}

EpochPlan UserSharder::Plan(int epoch) const {
  const int64_t users = static_cast<int64_t>(interactions_.size());
  const int64_t global = options_.batch_size;
  const auto order = train::SeededPermutation(users, options_.seed + static_cast<uint64_t>(epoch));

  EpochPlan plan;
  plan.world_size_ = world_size_;
  plan.steps_ = (users + global - 1) / global;
  plan.offsets_.push_back(0);
  for (int64_t step = 0; step < plan.steps_; ++step) {
    const int64_t begin = step * global, end = std::min(users, begin + global);
    const std::span<const int64_t> batch(order.data() + begin, static_cast<size_t>(end - begin));
    std::vector<int64_t> costs;
    for (const int64_t user : batch) costs.push_back(interactions_[user]);
    for (const auto& share : DealUsers(batch, costs, world_size_)) {
      plan.users_.insert(plan.users_.end(), share.begin(), share.end());
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
