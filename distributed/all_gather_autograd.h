// An all-gather that autograd differentiates through, for losses that couple the rows of a
// global batch: IISAN's in-batch softmax scores every row against every item of the batch, so
// N ranks reproduce one process only if each rank scores its rows against all ranks' items.
//
// Forward: [world, ...tensor.sizes()], row r holding rank r's tensor (same shape everywhere:
// pad a short batch and mask the padding). Backward: the gradients that every rank's loss sends
// to the gathered tensor are summed over ranks, and this rank keeps its own row.
//
// Weighting: because contributions travel through the gather as well as through each rank's
// parameters, scale the loss instead of the gradients: backpropagate share * loss (share as in
// LocalShare) and call GradientSynchronizer::Prepare(1.0). Every rank must run the forward and
// the backward of the same gathers in the same order, a rank with no rows of its own included.
#pragma once

#include <torch/types.h>

#include "distributed/communicator.h"

namespace iisan::distributed {

torch::Tensor AllGatherWithGradient(Communicator& comm, const torch::Tensor& tensor);

}  // namespace iisan::distributed
