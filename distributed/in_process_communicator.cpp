// Threads as ranks: each collective is a "round" keyed by its sequence number; the last rank
// to arrive computes the result for everyone, under one mutex.
#include "distributed/in_process_communicator.h"

#include <condition_variable>
#include <map>
#include <mutex>
#include <sstream>

#include <torch/torch.h>

namespace iisan::distributed {
namespace {

enum class OpKind { kAllReduce, kBroadcast, kAllGather, kBarrier };

std::string_view OpName(OpKind kind) {
  switch (kind) {
    case OpKind::kAllReduce: return "all_reduce";
    case OpKind::kBroadcast: return "broadcast";
    case OpKind::kAllGather: return "all_gather";
    case OpKind::kBarrier: return "barrier";
  }
  return "collective";
}

struct Round {
  OpKind kind = OpKind::kBarrier;
  int argument = 0;  // ReduceOp for all-reduce, root for broadcast
  std::vector<std::vector<torch::Tensor>> inputs;
  std::vector<bool> arrived;
  int arrivals = 0;
  int departures = 0;
  bool done = false;
  torch::Tensor gathered;
};

struct World {
  explicit World(int size, CollectiveOptions options) : size(size), options(options) {}
  const int size;
  const CollectiveOptions options;
  std::mutex mutex;
  std::condition_variable cv;
  std::map<uint64_t, Round> rounds;
};

void CheckSameShapes(const Round& round, const std::vector<torch::Tensor>& tensors, int rank, uint64_t sequence) {
  for (int other = 0; other < static_cast<int>(round.arrived.size()); ++other) {
    if (!round.arrived[other]) continue;
    const auto& theirs = round.inputs[other];
    bool same = theirs.size() == tensors.size();
    for (size_t i = 0; same && i < tensors.size(); ++i) {
      same = theirs[i].sizes() == tensors[i].sizes() && theirs[i].scalar_type() == tensors[i].scalar_type();
    }
    if (!same) {
      std::ostringstream message;
      message << "rank " << rank << ": " << OpName(round.kind) << " #" << sequence
              << " has other tensor shapes or dtypes than on rank " << other;
      throw CollectiveError(message.str());
    }
    return;
  }
}

void Complete(Round& round, int world_size) {
  switch (round.kind) {
    case OpKind::kAllReduce:
      // A world of one (ProcessGroup's, when training alone) has nothing to combine.
      if (world_size == 1) break;
      for (size_t i = 0; i < round.inputs[0].size(); ++i) {
        auto result = round.inputs[0][i].clone();
        for (int r = 1; r < world_size; ++r) result.add_(round.inputs[r][i]);
        if (static_cast<ReduceOp>(round.argument) == ReduceOp::kAverage) result.div_(world_size);
        for (int r = 0; r < world_size; ++r) round.inputs[r][i].copy_(result);
      }
      break;
    case OpKind::kBroadcast:
      for (int r = 0; r < world_size; ++r) {
        if (r != round.argument) round.inputs[r][0].copy_(round.inputs[round.argument][0]);
      }
      break;
    case OpKind::kAllGather: {
      std::vector<torch::Tensor> rows;
      for (int r = 0; r < world_size; ++r) rows.push_back(round.inputs[r][0]);
      round.gathered = torch::stack(rows);
      break;
    }
    case OpKind::kBarrier: break;
  }
  round.done = true;
}

class InProcessCommunicator;

class InProcessWork : public Work {
 public:
  InProcessWork(InProcessCommunicator& comm, uint64_t sequence) : comm_(comm), sequence_(sequence) {}
  void Wait() override;

 private:
  InProcessCommunicator& comm_;
  uint64_t sequence_;
};

class InProcessCommunicator : public Communicator {
 public:
  InProcessCommunicator(std::shared_ptr<World> world, int rank) : world_(std::move(world)), rank_(rank) {}

  int rank() const override { return rank_; }
  int world_size() const override { return world_->size; }
  std::string_view backend() const override { return "in-process"; }
  torch::Device device() const override { return torch::kCPU; }

  std::unique_ptr<Work> StartAllReduce(std::vector<torch::Tensor> tensors, ReduceOp op) override {
    for (const auto& t : tensors) CheckCollectiveInputs("all_reduce", {t}, t.device(), op);
    return std::make_unique<InProcessWork>(*this, Arrive(OpKind::kAllReduce, static_cast<int>(op), std::move(tensors)));
  }

  void Broadcast(torch::Tensor tensor, int root) override {
    CheckCollectiveInputs("broadcast", {tensor}, tensor.device());
    if (root < 0 || root >= world_->size) throw std::invalid_argument("broadcast: no rank " + std::to_string(root));
    Finish(Arrive(OpKind::kBroadcast, root, {std::move(tensor)}));
  }

  torch::Tensor AllGather(const torch::Tensor& tensor) override {
    CheckCollectiveInputs("all_gather", {tensor}, tensor.device());
    return Finish(Arrive(OpKind::kAllGather, 0, {tensor}));
  }

  void Barrier() override { Finish(Arrive(OpKind::kBarrier, 0, {})); }

  // Waits for round `sequence` to complete and returns its gathered tensor (if any).
  torch::Tensor Finish(uint64_t sequence) {
    std::unique_lock lock(world_->mutex);
    Round& round = world_->rounds.at(sequence);
    const auto deadline = std::chrono::steady_clock::now() + world_->options.timeout;
    if (!world_->cv.wait_until(lock, deadline, [&] { return round.done; })) {
      std::ostringstream message;
      message << DescribeCollective(*this, OpName(round.kind), sequence) << " timed out after "
              << std::chrono::duration<double>(world_->options.timeout).count() << " s waiting for rank(s)";
      for (int r = 0; r < world_->size; ++r) {
        if (!round.arrived[r]) message << " " << r;
      }
      throw CollectiveError(message.str());
    }
    torch::Tensor result = round.gathered.defined() ? round.gathered.clone() : torch::Tensor();
    if (++round.departures == world_->size) world_->rounds.erase(sequence);
    return result;
  }

 private:
  uint64_t Arrive(OpKind kind, int argument, std::vector<torch::Tensor> tensors) {
    std::lock_guard lock(world_->mutex);
    const uint64_t sequence = next_sequence_++;
    auto [it, first] = world_->rounds.try_emplace(sequence);
    Round& round = it->second;
    if (first) {
      round.kind = kind;
      round.argument = argument;
      round.inputs.resize(world_->size);
      round.arrived.assign(world_->size, false);
    } else if (round.kind != kind || round.argument != argument) {
      std::ostringstream message;
      message << DescribeCollective(*this, OpName(kind), sequence) << " does not match the "
              << OpName(round.kind) << " that other ranks issued as #" << sequence
              << ": ranks issue collectives in different orders or with different arguments";
      throw CollectiveError(message.str());
    } else {
      CheckSameShapes(round, tensors, rank_, sequence);
    }
    round.inputs[rank_] = std::move(tensors);
    round.arrived[rank_] = true;
    if (++round.arrivals == world_->size) {
      Complete(round, world_->size);
      world_->cv.notify_all();
    }
    return sequence;
  }

  std::shared_ptr<World> world_;
  const int rank_;
  uint64_t next_sequence_ = 0;
};

void InProcessWork::Wait() { comm_.Finish(sequence_); }

}  // namespace

std::vector<std::unique_ptr<Communicator>> MakeInProcessWorld(int world_size, CollectiveOptions options) {
  if (world_size < 1) throw std::invalid_argument("in-process world: size must be >= 1");
  auto world = std::make_shared<World>(world_size, options);
  std::vector<std::unique_ptr<Communicator>> ranks;
  for (int r = 0; r < world_size; ++r) ranks.push_back(std::make_unique<InProcessCommunicator>(world, r));
  return ranks;
}

}  // namespace iisan::distributed
