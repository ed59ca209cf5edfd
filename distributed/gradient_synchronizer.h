// Data-parallel gradient synchronisation: the gradients of the trainable parameters (and only
// those) are packed into buckets and summed across ranks with one all-reduce per bucket,
// started from autograd hooks as soon as a bucket's last gradient exists, so that
// communication overlaps the rest of the backward pass.
//
// Use, once per optimizer step and on every rank, even one whose batch is empty:
//
//   sync.Prepare(share);        // before backward; share = this rank's weight, see below
//   if (has_rows) loss.backward();
//   auto stats = sync.Finish(); // param.grad() now holds the synchronised gradient
//   optimizer.step();
//
// Weighting. Rank r contributes share_r * grad_r, and the ranks' contributions are summed. With
// share_r = rows_r / rows_all, where rows_r is what rank r's loss averages over (its valid
// rows) and rows_all the sum over ranks, the result is exactly the gradient of the mean over
// the global batch: what one process computes from the whole batch. Prepare() without an
// argument uses share 1/world (DDP's plain average), which equals that only when every rank
// has as many rows. UserSharder's EpochPlan lists every rank's users, so rows_all is known on
// every rank without communication (see LocalShare in user_sharder.h).
//
// Buckets are started strictly in bucket order, whatever order the hooks fire in, so every
// rank issues the same collectives in the same order. A parameter that got no gradient this
// step (unused, or an empty batch) contributes zeros when Finish() starts the buckets left.
// After Finish() every trainable parameter has a defined gradient, overwritten (not
// accumulated) with the synchronised one; one backward per Prepare()/Finish().
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <vector>

#include <torch/types.h>

#include "distributed/bucket_plan.h"
#include "distributed/communicator.h"

namespace iisan::distributed {

struct SyncStats {
  int64_t bytes = 0;                  // gradient bytes this rank all-reduced this step
  int buckets = 0;
  int buckets_started_in_backward = 0;  // started by hooks, i.e. overlapped with the backward pass
  double wait_seconds = 0.0;          // time Finish() waited for communication (the part not hidden)
};

class GradientSynchronizer {
 public:
  // Keeps the parameters of `parameters` that require gradients. Gradients travel through
  // `comm`, which must outlive this object and work on the parameters' device.
  GradientSynchronizer(Communicator& comm, const std::vector<torch::Tensor>& parameters,
                       size_t bucket_bytes = kDefaultBucketBytes);
  ~GradientSynchronizer();
  GradientSynchronizer(const GradientSynchronizer&) = delete;
  GradientSynchronizer& operator=(const GradientSynchronizer&) = delete;

  void Prepare(std::optional<double> local_share = std::nullopt);
  SyncStats Finish();

  // The trainable parameters, in bucket packing order (the reverse of the order given, as
  // backward produces gradients roughly from the last layer to the first).
  const std::vector<torch::Tensor>& parameters() const { return parameters_; }
  const std::vector<Bucket>& buckets() const { return buckets_; }
  int64_t bytes_per_step() const;

 private:
  void OnGradient(size_t index, const torch::Tensor& grad);
  // Starts every bucket from next_bucket_ on whose gradients are all in, and returns how many;
  // the caller holds mutex_.
  size_t StartReadyBuckets();

  Communicator& comm_;
  std::vector<torch::Tensor> parameters_;
  std::vector<Bucket> buckets_;
  std::vector<torch::Tensor> buffers_;  // one flat buffer per bucket
  std::vector<size_t> bucket_of_;       // parameter -> bucket
  std::vector<size_t> slot_of_;         // parameter -> position within its bucket
  std::vector<unsigned> hook_handles_;

  std::mutex mutex_;  // hooks may run on autograd's device threads
  bool prepared_ = false;
  double share_ = 1.0;
  std::vector<bool> received_;
  std::vector<size_t> missing_;  // per bucket: gradients still to come
  size_t next_bucket_ = 0;
  std::vector<std::unique_ptr<Work>> in_flight_;
  int started_in_backward_ = 0;
};

}  // namespace iisan::distributed
