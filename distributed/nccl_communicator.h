// Collectives on CUDA tensors through NCCL (built only where LibTorch has CUDA and NCCL is
// found: IISAN_WITH_NCCL). The unique id travels from rank 0 over a bootstrap communicator (MPI
// or TCP), so NCCL works wherever the host backends do.
//
// No hang: the communicator is created non-blocking, so that joining and every launch can be
// polled against the timeout, and Work::Wait() polls the collective's CUDA event together with
// ncclCommGetAsyncError. A timeout or an asynchronous error (a peer died: NCCL reports a
// remote or system error) aborts the NCCL communicator, which frees the stuck kernels, and
// ends the process through AbortJob with a message naming the rank and the collective.
// Collectives run on the current CUDA stream of the communicator's device (the stream of the
// autograd hook that starts them); Wait() blocks the host until they are done.
#pragma once

#include <memory>

#include <torch/types.h>

#include "distributed/communicator.h"

namespace iisan::distributed {

// Joins every rank of `bootstrap` into an NCCL communicator on `device` (cuda:k). Collective
// over `bootstrap`.
std::unique_ptr<Communicator> ConnectNccl(Communicator& bootstrap, torch::Device device, CollectiveOptions options = {});

}  // namespace iisan::distributed
