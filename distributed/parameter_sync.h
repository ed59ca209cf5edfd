// Keeping the ranks' copies of the model identical: one broadcast from rank 0 before training,
// and a debugging check that every rank still holds bitwise the same values (gradients that
// were not synchronised, or a non-deterministic update, show up here as the first tensor that
// differs).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include <torch/types.h>

#include "distributed/bucket_plan.h"
#include "distributed/communicator.h"

namespace iisan::distributed {

// Overwrites every rank's `tensors` with root's, in place (gradients not recorded), packed
// into buckets. Tensors must be on comm.device() (e.g. parameters and buffers).
void BroadcastTensors(Communicator& comm, const std::vector<torch::Tensor>& tensors, int root = 0,
                      size_t bucket_bytes = kDefaultBucketBytes);

class ParametersDivergedError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Gathers a 64-bit hash of each tensor's bytes from every rank and throws
// ParametersDivergedError naming the first tensor, the ranks and `step` where they differ.
// Every rank sees the same hashes, so every rank throws (or none does): no rank is left
// waiting in a later collective. `names` (optional) label the tensors in the message.
void CheckTensorsInSync(Communicator& comm, const std::vector<torch::Tensor>& tensors,
                        const std::vector<std::string>& names, int64_t step);

}  // namespace iisan::distributed
