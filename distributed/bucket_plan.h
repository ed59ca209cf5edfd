// How tensors are packed into flat buckets so that one collective moves many of them: in the
// order given, never mixing dtypes or devices, a bucket closed once it holds bucket_bytes (a
// tensor larger than that gets a bucket of its own).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include <torch/types.h>

namespace iisan::distributed {

// Small enough that IISAN's few MB of trainable parameters span several buckets, so that the
// first ones travel while the backward pass is still producing the rest.
inline constexpr size_t kDefaultBucketBytes = size_t{4} << 20;

struct Bucket {
  std::vector<size_t> members;   // indices into the planned tensors, in packing order
  std::vector<int64_t> offsets;  // element offset of each member in the flat buffer
  int64_t numel = 0;
  torch::ScalarType dtype = torch::kFloat;
  torch::Device device = torch::kCPU;

  int64_t bytes() const { return numel * static_cast<int64_t>(c10::elementSize(dtype)); }
};

std::vector<Bucket> PlanBuckets(const std::vector<torch::Tensor>& tensors, size_t bucket_bytes);

// The bucket's members, flattened and concatenated.
torch::Tensor FlattenBucket(const Bucket& bucket, const std::vector<torch::Tensor>& tensors);

// Copies `flat` back into the bucket's members (in place, gradients not recorded).
void UnflattenBucket(const Bucket& bucket, const torch::Tensor& flat, const std::vector<torch::Tensor>& tensors);

}  // namespace iisan::distributed
