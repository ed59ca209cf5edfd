// Collectives on CPU tensors over MPI (built only where MPI is found: IISAN_WITH_MPI).
//
// No hang: every collective is a nonblocking MPI call (MPI_Iallreduce, MPI_Ibcast,
// MPI_Iallgather, MPI_Ibarrier) whose request Wait() polls with MPI_Testall against the
// timeout. Past it, the rank logs which collective stalled and calls MPI_Abort, which ends
// every rank of the job with kCollectiveFailureExitCode (mpirun names the aborting rank too).
// A rank that dies outright is noticed by mpirun itself, which ends the others.
// MPI progresses nonblocking collectives inside MPI calls, so an all-reduce started during the
// backward pass advances at the next start or at Wait(); overlap is partial on CPU.
#pragma once

#include <memory>

#include "distributed/communicator.h"
#include "distributed/rendezvous.h"

namespace iisan::distributed {

// Joins MPI_COMM_WORLD (initialising MPI once per process, finalised at exit) and checks it
// against `world`: a different rank or size (e.g. srun without PMI support gives every process
// a world of its own) is a CollectiveError rather than N silent worlds of one.
std::unique_ptr<Communicator> ConnectMpi(const WorldInfo& world, CollectiveOptions options = {});

}  // namespace iisan::distributed
