// Runs one function per rank, each on its own thread, over in-process communicators (or any
// communicators the caller made), and rethrows the first rank's failure on the test's thread.
#pragma once

#include <exception>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "distributed/communicator.h"
#include "distributed/in_process_communicator.h"

namespace iisan::distributed::testing {

inline void RunRanks(std::vector<std::unique_ptr<Communicator>>& comms, const std::function<void(Communicator&)>& body) {
  std::vector<std::exception_ptr> errors(comms.size());
  std::vector<std::thread> threads;
  for (size_t r = 0; r < comms.size(); ++r) {
    threads.emplace_back([&, r] {
      try {
        body(*comms[r]);
      } catch (...) {
        errors[r] = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

inline void RunRanks(int world_size, const std::function<void(Communicator&)>& body, CollectiveOptions options = {}) {
  auto comms = MakeInProcessWorld(world_size, options);
  RunRanks(comms, body);
}

}  // namespace iisan::distributed::testing
