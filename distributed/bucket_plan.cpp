// Greedy packing of tensors into buckets, and flattening to and from a bucket's buffer.
#include "distributed/bucket_plan.h"

#include <torch/torch.h>

namespace iisan::distributed {

std::vector<Bucket> PlanBuckets(const std::vector<torch::Tensor>& tensors, size_t bucket_bytes) {
  std::vector<Bucket> buckets;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& t = tensors[i];
    const bool fits = !buckets.empty() && buckets.back().dtype == t.scalar_type() &&
                      buckets.back().device == t.device() &&
                      static_cast<size_t>(buckets.back().bytes()) < bucket_bytes;
    if (!fits) {
      Bucket bucket;
      bucket.dtype = t.scalar_type();
      bucket.device = t.device();
      buckets.push_back(std::move(bucket));
    }
    Bucket& bucket = buckets.back();
    bucket.members.push_back(i);
    bucket.offsets.push_back(bucket.numel);
    bucket.numel += t.numel();
  }
  return buckets;
}

torch::Tensor FlattenBucket(const Bucket& bucket, const std::vector<torch::Tensor>& tensors) {
  std::vector<torch::Tensor> parts;
  for (size_t member : bucket.members) parts.push_back(tensors[member].detach().reshape(-1));
  return torch::cat(parts);
}

void UnflattenBucket(const Bucket& bucket, const torch::Tensor& flat, const std::vector<torch::Tensor>& tensors) {
  torch::NoGradGuard no_grad;
  for (size_t k = 0; k < bucket.members.size(); ++k) {
    auto& target = tensors[bucket.members[k]];
    target.copy_(flat.narrow(0, bucket.offsets[k], target.numel()).view_as(target));
  }
}

}  // namespace iisan::distributed
