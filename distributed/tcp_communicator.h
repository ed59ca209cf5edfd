// Collectives on CPU tensors over TCP, without MPI: the transport of `iisan launch` and of Slurm
// jobs without MPI, and a bootstrap that can hand NCCL its unique id. A star around rank 0:
// every rank sends its contribution to rank 0, which combines them in rank order (so results
// are deterministic and bitwise equal on every rank) and sends the result back. Its bandwidth
// is that of rank 0's links, ample for IISAN's side-network gradients (a few MB a step).
//
// Failure: every socket operation has a deadline. Rank 0 names the rank it waited for (stalled
// past the timeout, or its connection closed because it died); the other ranks wait half a
// timeout longer for rank 0, so that its message, which names the culprit, comes first. Either
// way the process ends through AbortJob and closing its sockets takes the others down.
#pragma once

#include <memory>

#include "distributed/communicator.h"
#include "distributed/rendezvous.h"

namespace iisan::distributed {

// Name of the file in which rank 0 publishes "HOST PORT" for a file:DIR rendezvous.
inline constexpr const char* kTcpAddressFile = "tcp_address";

// Joins the world of `world` (rendezvous tcp:HOST:PORT or file:DIR); returns once all ranks
// have joined. Throws CollectiveError if they do not within the timeout, naming the ranks
// missing (on rank 0) or the address that could not be reached (elsewhere).
std::unique_ptr<Communicator> ConnectTcp(const WorldInfo& world, CollectiveOptions options = {});

}  // namespace iisan::distributed
