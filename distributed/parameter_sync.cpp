// Bucketed broadcast and the cross-rank hash comparison of tensors.
#include "distributed/parameter_sync.h"

#include <sstream>

#include <torch/torch.h>

namespace iisan::distributed {
namespace {

// FNV-1a over the bytes: any difference in any bit shows, which is what "identical" means here.
int64_t HashBytes(const torch::Tensor& tensor) {
  const auto cpu = tensor.detach().to(torch::kCPU).contiguous();
  const auto* p = static_cast<const uint8_t*>(cpu.data_ptr());
  uint64_t hash = 1469598103934665603ULL;
  for (size_t i = 0; i < cpu.nbytes(); ++i) {
    hash ^= p[i];
    hash *= 1099511628211ULL;
  }
  return static_cast<int64_t>(hash);
}

}  // namespace

void BroadcastTensors(Communicator& comm, const std::vector<torch::Tensor>& tensors, int root, size_t bucket_bytes) {
  for (const auto& bucket : PlanBuckets(tensors, bucket_bytes)) {
    auto flat = FlattenBucket(bucket, tensors);
    comm.Broadcast(flat, root);
    UnflattenBucket(bucket, flat, tensors);
  }
}

void CheckTensorsInSync(Communicator& comm, const std::vector<torch::Tensor>& tensors,
                        const std::vector<std::string>& names, int64_t step) {
  std::vector<int64_t> local;
  for (const auto& t : tensors) local.push_back(HashBytes(t));
  const auto hashes = comm.AllGather(torch::tensor(local, torch::kInt64).to(comm.device())).to(torch::kCPU);
  const auto table = hashes.accessor<int64_t, 2>();
  for (size_t i = 0; i < tensors.size(); ++i) {
    for (int r = 1; r < comm.world_size(); ++r) {
      if (table[r][i] == table[0][i]) continue;
      std::ostringstream message;
      message << "rank " << comm.rank() << ": at step " << step << ", "
              << (i < names.size() ? "'" + names[i] + "'" : "tensor #" + std::to_string(i)) << " on rank " << r
              << " differs from rank 0's: the ranks' models have diverged (gradients not synchronised?)";
      throw ParametersDivergedError(message.str());
    }
  }
}

}  // namespace iisan::distributed
