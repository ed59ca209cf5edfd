// Every collective of the in-process backend, with threads as ranks: the reference semantics
// that the MPI, TCP and NCCL backends are held to (multiprocess tests run the same checks).
#include "distributed/in_process_communicator.h"

#include <atomic>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tests/distributed/run_ranks.h"

namespace iisan::distributed {
namespace {

using testing::RunRanks;

TEST(InProcessCommunicatorTest, AllReduceSumsAndAveragesEveryTensor) {
  RunRanks(3, [](Communicator& comm) {
    const double r = comm.rank();
    auto a = torch::full({2, 3}, r + 1, torch::kFloat64);
    auto b = torch::arange(4, torch::kInt64) * (comm.rank() + 1);
    comm.StartAllReduce({a, b}, ReduceOp::kSum)->Wait();
    EXPECT_TRUE(torch::equal(a, torch::full({2, 3}, 6.0, torch::kFloat64)));
    EXPECT_TRUE(torch::equal(b, torch::arange(4, torch::kInt64) * 6));
    auto c = torch::full({5}, r, torch::kFloat32);
    comm.AllReduce(c, ReduceOp::kAverage);
    EXPECT_TRUE(torch::allclose(c, torch::full({5}, 1.0f)));
  });
}

TEST(InProcessCommunicatorTest, OutstandingAllReducesCompleteInIssueOrder) {
  RunRanks(2, [](Communicator& comm) {
    std::vector<torch::Tensor> tensors;
    std::vector<std::unique_ptr<Work>> works;
    for (int i = 0; i < 4; ++i) {
      tensors.push_back(torch::full({3}, static_cast<float>(i + comm.rank())));
      works.push_back(comm.StartAllReduce({tensors.back()}, ReduceOp::kSum));
    }
    for (auto it = works.rbegin(); it != works.rend(); ++it) (*it)->Wait();
    for (int i = 0; i < 4; ++i) EXPECT_EQ(tensors[i][0].item<float>(), 2.0f * i + 1) << i;
  });
}

TEST(InProcessCommunicatorTest, BroadcastFromEveryRoot) {
  RunRanks(3, [](Communicator& comm) {
    for (int root = 0; root < comm.world_size(); ++root) {
      auto t = torch::full({4}, comm.rank() * 10.0f);
      comm.Broadcast(t, root);
      EXPECT_TRUE(torch::equal(t, torch::full({4}, root * 10.0f))) << "root " << root;
    }
  });
}

TEST(InProcessCommunicatorTest, AllGatherStacksRowsInRankOrder) {
  RunRanks(4, [](Communicator& comm) {
    const auto gathered = comm.AllGather(torch::full({2}, static_cast<int64_t>(comm.rank()), torch::kInt64));
    ASSERT_EQ(gathered.sizes(), (std::vector<int64_t>{4, 2}));
    for (int r = 0; r < 4; ++r) EXPECT_EQ(gathered[r][1].item<int64_t>(), r);
  });
}

TEST(InProcessCommunicatorTest, BarrierHoldsEveryRankUntilAllArrive) {
  std::atomic<int> arrived{0};
  RunRanks(3, [&](Communicator& comm) {
    arrived++;
    comm.Barrier();
    EXPECT_EQ(arrived.load(), 3);
  });
}

TEST(InProcessCommunicatorTest, WorldOfOneIsTheIdentity) {
  auto comms = MakeInProcessWorld(1);
  auto t = torch::tensor({1.5, -2.0});
  comms[0]->AllReduce(t, ReduceOp::kAverage);
  EXPECT_TRUE(torch::equal(t, torch::tensor({1.5, -2.0})));
  EXPECT_EQ(comms[0]->AllGather(t).sizes(), (std::vector<int64_t>{1, 2}));
}

TEST(InProcessCommunicatorTest, TimeoutNamesTheRanksThatNeverArrived) {
  CollectiveOptions options;
  options.timeout = std::chrono::milliseconds(100);
  auto comms = MakeInProcessWorld(3, options);
  comms.pop_back();  // rank 2 never takes part
  try {
    RunRanks(comms, [](Communicator& comm) { comm.AllReduce(torch::ones({1}), ReduceOp::kSum); });
    FAIL() << "no timeout";
  } catch (const CollectiveError& e) {
    EXPECT_NE(std::string(e.what()).find("all_reduce #0 timed out after 0.1 s waiting for rank(s) 2"),
              std::string::npos)
        << e.what();
  }
}

TEST(InProcessCommunicatorTest, CollectivesIssuedInDifferentOrdersAreAnError) {
  CollectiveOptions options;
  options.timeout = std::chrono::milliseconds(200);
  EXPECT_THROW(RunRanks(
                   2,
                   [](Communicator& comm) {
                     if (comm.rank() == 0) {
                       comm.Barrier();
                     } else {
                       comm.Broadcast(torch::ones({1}), 0);
                     }
                   },
                   options),
               CollectiveError);
}

TEST(InProcessCommunicatorTest, AverageOfIntegersIsRejectedBeforeAnyPeerIsInvolved) {
  auto comms = MakeInProcessWorld(2);
  EXPECT_THROW(comms[0]->StartAllReduce({torch::ones({2}, torch::kInt64)}, ReduceOp::kAverage), std::invalid_argument);
  EXPECT_THROW(comms[0]->StartAllReduce({torch::ones({4}).slice(0, 0, 4, 2)}, ReduceOp::kSum), std::invalid_argument);
}

}  // namespace
}  // namespace iisan::distributed
