// Backend selection from the rendezvous kind and the training device.
#include "distributed/process_group.h"

#include <torch/cuda.h>

#include "distributed/in_process_communicator.h"
#include "distributed/tcp_communicator.h"
#if IISAN_WITH_MPI
#include "distributed/mpi_communicator.h"
#endif
#if IISAN_WITH_NCCL
#include "distributed/nccl_communicator.h"
#endif

namespace iisan::distributed {
namespace {

std::unique_ptr<Communicator> ConnectHost(const WorldInfo& world, CollectiveOptions options) {
  if (ParseRendezvous(world.rendezvous).kind == RendezvousAddress::Kind::kMpi) {
#if IISAN_WITH_MPI
    return ConnectMpi(world, options);
#else
    throw RendezvousError("rendezvous mpi, but this build has no MPI: use tcp:HOST:PORT or file:DIR");
#endif
  }
  return ConnectTcp(world, options);
}

}  // namespace

Communicator& ProcessGroup::For(torch::Device where) {
  if (!where.is_cuda() || world.world_size == 1) return *host;
  if (!device) throw std::logic_error("ProcessGroup: no communicator for " + where.str() + " (joined for another device)");
  return *device;
}

ProcessGroup JoinProcessGroup(const WorldInfo& world, torch::Device device, CollectiveOptions options) {
  ProcessGroup group;
  group.world = world;
  if (world.world_size == 1) {
    group.host = std::move(MakeInProcessWorld(1, options).front());
    return group;
  }
  group.host = ConnectHost(world, options);
  if (device.is_cuda()) {
#if IISAN_WITH_NCCL
    group.device = ConnectNccl(*group.host, LocalDevice(world, device), options);
#else
    throw RendezvousError("CUDA training across " + std::to_string(world.world_size) +
                          " ranks needs NCCL, and this build has none (it needs LibTorch with CUDA and NCCL)");
#endif
  }
  return group;
}

torch::Device LocalDevice(const WorldInfo& world, torch::Device requested) {
  if (!requested.is_cuda() || requested.has_index()) return requested;
  const auto visible = static_cast<int>(torch::cuda::device_count());
  // A launcher that binds one GPU to each rank (srun --gpus-per-task=1) leaves each rank
  // seeing only its own, as device 0.
  if (visible == 1) return torch::Device(torch::kCUDA, 0);
  if (world.local_rank >= visible) {
    throw RendezvousError("local rank " + std::to_string(world.local_rank) + " needs a GPU of its own but " +
                          std::to_string(visible) + " are visible");
  }
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(world.local_rank));
}

}  // namespace iisan::distributed
