// A world whose ranks are threads of one process: the reference backend for unit tests (every
// multi-rank code path runs in one process, under a debugger) and the communicator of a world
// of one. Results are computed in rank order, so they are deterministic; a timeout throws
// CollectiveError naming the ranks that never arrived instead of ending the process.
#pragma once

#include <memory>
#include <vector>

#include "distributed/communicator.h"

namespace iisan::distributed {

// Returns one communicator per rank, all joined to the same world. Rank r's communicator must
// be used by one thread at a time (as a process's would); tensors may live on any device.
std::vector<std::unique_ptr<Communicator>> MakeInProcessWorld(int world_size, CollectiveOptions options = {});

}  // namespace iisan::distributed
