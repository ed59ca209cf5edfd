// The cache step of a job that runs on several ranks (mpirun, srun, `iisan launch`).
#pragma once

#include <filesystem>

#include "cache/builder.h"
#include "distributed/process_group.h"
#include "launcher/job.h"

namespace iisan::launcher {

// Every rank calls this. With cache.service set, every rank asks the service (which builds once).
// Otherwise rank 0 takes the cache's file lock and checks the file; if it must be built, every
// rank computes its share of the chunks and rank 0 assembles the file. Returns the cache path
// on every rank once the cache is complete; `stats` gets this rank's build timing.
std::filesystem::path EnsureCacheFileOnRanks(const Job& job, distributed::ProcessGroup& group,
                                             cache::BuildStats* stats = nullptr);

}  // namespace iisan::launcher
