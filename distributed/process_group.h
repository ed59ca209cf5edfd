// Joining the job's world once the rendezvous is resolved: the communicator for host tensors
// (metrics, parameter checks, NCCL's bootstrap) and, for CUDA training, the one for the GPU.
#pragma once

#include <memory>

#include <torch/types.h>

#include "distributed/communicator.h"
#include "distributed/rendezvous.h"

namespace iisan::distributed {

struct ProcessGroup {
  WorldInfo world;
  std::unique_ptr<Communicator> host;    // CPU tensors: MPI or TCP; in-process for a world of one
  std::unique_ptr<Communicator> device;  // CUDA tensors: NCCL; null on CPU and in a world of one

  // The communicator for tensors on `where` (gradients, parameters).
  Communicator& For(torch::Device where);
};

// Connects according to world.rendezvous (mpi -> MPI; tcp:/file: -> TCP) and, if `device` is
// CUDA and the world has several ranks, NCCL on that device, bootstrapped over the host
// communicator. A backend that this build lacks is a RendezvousError, not a fallback.
ProcessGroup JoinProcessGroup(const WorldInfo& world, torch::Device device, CollectiveOptions options = {});

// `requested` with the GPU of this rank filled in: cuda:local_rank for a CUDA device given
// without an index (cuda:0 where a rank sees a single GPU); other devices unchanged.
torch::Device LocalDevice(const WorldInfo& world, torch::Device requested);

}  // namespace iisan::distributed
