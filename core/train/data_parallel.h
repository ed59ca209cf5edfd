// What the trainer needs from a data-parallel process group (DESIGN.md, distributed). The
// distributed/ library implements it over MPI, TCP or NCCL; core/ only sees this interface.
//
// How a step is split: the global batch is the one a single process would train on (the same
// seeded user order and batch size). Its users are dealt to the ranks (equal counts, balanced by
// interactions), every rank embeds its own users' items and all-gathers the embeddings, so that
// each rank scores its users' rows against the whole global batch (the in-batch softmax needs
// every item as a negative), and the ranks' summed gradients are exactly the one-process
// gradient. Evaluation splits the users into contiguous ranges and reduces the metric sums.
// How the users are dealt is the job's one sharding policy (distributed/user_sharder.h), which
// the trainer reaches through Deal().
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "core/train/ranking.h"

namespace iisan::train {

struct CommStats {
  int64_t bytes = 0;     // gradient bytes all-reduced by this rank in the step
  double seconds = 0.0;  // time spent waiting for the all-reduce after the backward pass
};

class DataParallel {
 public:
  virtual ~DataParallel() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;

  // The users of one global batch dealt to the ranks (one list per rank, in rank order; every
  // rank computes the same deal). `costs[i]` is users[i]'s training interactions.
  virtual std::vector<std::vector<int64_t>> Deal(std::span<const int64_t> users,
                                                 std::span<const int64_t> costs) const = 0;
  // The users [first, second) this rank evaluates (contiguous, every user on one rank).
  virtual std::pair<int64_t, int64_t> EvaluationUsers(int64_t users) const = 0;

  // [b, ...] with the same shape on every rank -> [world * b, ...], rank r's rows at r * b.
  // Backward sends each rank the summed gradient of its own rows.
  virtual torch::Tensor AllGather(const torch::Tensor& local) = 0;
  // Around each backward pass: when AfterBackward returns, every trainable parameter's gradient
  // is the sum of the ranks' gradients.
  virtual void BeforeBackward() = 0;
  virtual CommStats AfterBackward() = 0;
  // Rank 0's values into every rank's tensors (the trainable parameters at the start).
  virtual void Broadcast(const std::vector<torch::Tensor>& tensors) = 0;
  // Sums over ranks.
  virtual double Sum(double value) = 0;
  virtual RankingMetrics ReduceMetrics(const RankingMetrics& local, int64_t expected_users) = 0;
  // Debug check: throws, naming the first differing tensor and the step, unless every rank
  // holds the same values.
  virtual void CheckInSync(const std::vector<torch::Tensor>& tensors, const std::vector<std::string>& names,
                           int64_t step) = 0;
};

}  // namespace iisan::train
