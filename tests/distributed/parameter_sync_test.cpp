// The initial broadcast of parameters and the divergence check.
#include "distributed/parameter_sync.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tests/distributed/run_ranks.h"

namespace iisan::distributed {
namespace {

using testing::RunRanks;

std::vector<torch::Tensor> RankTensors(int rank) {
  auto weight = torch::full({3, 4}, static_cast<float>(rank)).requires_grad_();
  auto steps = torch::full({2}, static_cast<int64_t>(10 + rank), torch::kInt64);
  return {weight, steps, torch::full({5}, rank * 0.5)};
}

TEST(ParameterSyncTest, BroadcastCopiesRootsValuesIntoEveryRank) {
  RunRanks(3, [](Communicator& comm) {
    const auto tensors = RankTensors(comm.rank());
    BroadcastTensors(comm, tensors, /*root=*/1, /*bucket_bytes=*/16);
    const auto expected = RankTensors(1);
    for (size_t i = 0; i < tensors.size(); ++i) EXPECT_TRUE(torch::equal(tensors[i], expected[i])) << i;
    EXPECT_TRUE(tensors[0].requires_grad());
  });
}

TEST(ParameterSyncTest, IdenticalTensorsPassTheCheck) {
  RunRanks(2, [](Communicator& comm) { CheckTensorsInSync(comm, RankTensors(0), {}, 7); });
}

TEST(ParameterSyncTest, EveryRankReportsTheFirstTensorThatDiverged) {
  std::vector<std::string> messages(3);
  RunRanks(3, [&](Communicator& comm) {
    auto tensors = RankTensors(0);
    if (comm.rank() == 2) tensors[2][4].fill_(1e-30);  // one element, far below any tolerance
    try {
      CheckTensorsInSync(comm, tensors, {"w", "steps", "side.bias"}, 120);
    } catch (const ParametersDivergedError& e) {
      messages[comm.rank()] = e.what();
    }
  });
  for (int r = 0; r < 3; ++r) {
    EXPECT_NE(messages[r].find("at step 120, 'side.bias' on rank 2 differs from rank 0's"), std::string::npos)
        << messages[r];
  }
}

}  // namespace
}  // namespace iisan::distributed
