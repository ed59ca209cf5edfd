// What every backend shares: input checks, failure messages and the process abort.
#include "distributed/communicator.h"

#include <cstdio>
#include <cstdlib>
#include <sstream>

#include <glog/logging.h>

namespace iisan::distributed {

void Communicator::AllReduce(torch::Tensor tensor, ReduceOp op) {
  StartAllReduce({std::move(tensor)}, op)->Wait();
}

int64_t TotalBytes(const std::vector<torch::Tensor>& tensors) {
  int64_t bytes = 0;
  for (const auto& t : tensors) bytes += t.numel() * static_cast<int64_t>(t.element_size());
  return bytes;
}

std::string DescribeCollective(const Communicator& comm, std::string_view op, uint64_t sequence, int64_t bytes,
                               int tensors) {
  std::ostringstream out;
  out << "rank " << comm.rank() << "/" << comm.world_size() << " (" << comm.backend() << "): " << op << " #"
      << sequence;
  if (bytes >= 0) {
    out << " [";
    if (tensors != 1) out << tensors << " tensors, ";
    if (bytes >= (1 << 20)) {
      out << static_cast<double>(bytes) / (1 << 20) << " MiB";
    } else {
      out << bytes << " B";
    }
    out << "]";
  }
  return out.str();
}

void CheckCollectiveInputs(std::string_view op, const std::vector<torch::Tensor>& tensors, torch::Device device,
                           ReduceOp reduce) {
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& t = tensors[i];
    std::string where = std::string(op) + ": tensor " + std::to_string(i);
    if (!t.defined()) throw std::invalid_argument(where + " is undefined");
    if (!t.is_contiguous()) throw std::invalid_argument(where + " is not contiguous");
    if (t.device() != device) {
      throw std::invalid_argument(where + " is on " + t.device().str() + ", this communicator works on " +
                                  device.str());
    }
    if (reduce == ReduceOp::kAverage && !t.is_floating_point()) {
      throw std::invalid_argument(where + " is " + std::string(c10::toString(t.scalar_type())) +
                                  "; an average needs a floating-point tensor");
    }
  }
}

void AbortJob(const std::string& message) {
  LOG(ERROR) << message;
  google::FlushLogFiles(google::GLOG_INFO);
  std::fflush(stdout);
  std::fflush(stderr);
  std::_Exit(kCollectiveFailureExitCode);
}

}  // namespace iisan::distributed
