// The TCP backend with threads as ranks (each with its own sockets, as processes would have):
// collectives, both rendezvous kinds, and joins that fail loudly. Failures mid-collective end
// the process, so they are tested across processes (tests/distributed/CMakeLists.txt).
#include "distributed/tcp_communicator.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "distributed/tcp_socket.h"
#include "tests/distributed/run_ranks.h"

namespace iisan::distributed {
namespace {

namespace fs = std::filesystem;

fs::path FreshDir() {
  std::string pattern = (fs::temp_directory_path() / "iisan-tcp-test-XXXXXX").string();
  return mkdtemp(pattern.data());
}

CollectiveOptions Timeout(int ms) {
  CollectiveOptions options;
  options.timeout = std::chrono::milliseconds(ms);
  return options;
}

// Connects `world_size` threads through `rendezvous` and runs `body` on each.
void RunTcpRanks(int world_size, const std::string& rendezvous, const std::function<void(Communicator&)>& body,
                 CollectiveOptions options = Timeout(10000)) {
  std::vector<std::unique_ptr<Communicator>> comms(world_size);
  std::vector<std::exception_ptr> errors(world_size);
  std::vector<std::thread> joiners;
  for (int r = 0; r < world_size; ++r) {
    joiners.emplace_back([&, r] {
      WorldInfo world;
      world.rank = r;
      world.world_size = world_size;
      world.rendezvous = rendezvous;
      try {
        comms[r] = ConnectTcp(world, options);
      } catch (...) {
        errors[r] = std::current_exception();
      }
    });
  }
  for (auto& t : joiners) t.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
  testing::RunRanks(comms, body);
}

TEST(TcpCommunicatorTest, CollectivesMatchTheInProcessReference) {
  const auto dir = FreshDir();
  RunTcpRanks(3, "file:" + dir.string(), [](Communicator& comm) {
    EXPECT_EQ(comm.backend(), "tcp");
    auto a = torch::full({1000}, comm.rank() + 1.0, torch::kFloat64);
    auto b = torch::arange(5, torch::kInt64) * (comm.rank() + 1);
    comm.StartAllReduce({a, b}, ReduceOp::kSum)->Wait();
    EXPECT_TRUE(torch::equal(a, torch::full({1000}, 6.0, torch::kFloat64)));
    EXPECT_TRUE(torch::equal(b, torch::arange(5, torch::kInt64) * 6));

    std::vector<torch::Tensor> grads;
    std::vector<std::unique_ptr<Work>> works;
    for (int i = 0; i < 3; ++i) {
      grads.push_back(torch::full({64}, static_cast<float>(comm.rank() * 3 + i)));
      works.push_back(comm.StartAllReduce({grads.back()}, ReduceOp::kAverage));
    }
    for (auto& w : works) w->Wait();
    for (int i = 0; i < 3; ++i) EXPECT_FLOAT_EQ(grads[i][0].item<float>(), 3.0f + i);

    for (int root = 0; root < 3; ++root) {
      auto t = torch::full({2, 2}, static_cast<float>(comm.rank()));
      comm.Broadcast(t, root);
      EXPECT_TRUE(torch::equal(t, torch::full({2, 2}, static_cast<float>(root))));
    }
    const auto gathered = comm.AllGather(torch::full({3}, static_cast<int64_t>(comm.rank()), torch::kInt64));
    for (int r = 0; r < 3; ++r) EXPECT_EQ(gathered[r][2].item<int64_t>(), r);
    comm.Barrier();
  });
  EXPECT_FALSE(fs::exists(dir / kTcpAddressFile)) << "rank 0 removes its address once everyone has joined";
  fs::remove_all(dir);
}

TEST(TcpCommunicatorTest, ExplicitHostAndPort) {
  const int port = TcpSocket::Listen(0).local_port();  // a port that was free a moment ago
  RunTcpRanks(2, "tcp:127.0.0.1:" + std::to_string(port), [](Communicator& comm) {
    auto t = torch::ones({3});
    comm.AllReduce(t, ReduceOp::kSum);
    EXPECT_EQ(t[0].item<float>(), 2.0f);
  });
}

TEST(TcpCommunicatorTest, MissingRankMakesTheJoinFailNamingIt) {
  const auto dir = FreshDir();
  std::vector<std::string> errors(2);
  std::vector<std::thread> ranks;
  for (int r = 0; r < 2; ++r) {  // rank 2 of 3 never starts
    ranks.emplace_back([&, r] {
      WorldInfo world;
      world.rank = r;
      world.world_size = 3;
      world.rendezvous = "file:" + dir.string();
      try {
        ConnectTcp(world, Timeout(300));
      } catch (const CollectiveError& e) {
        errors[r] = e.what();
      }
    });
  }
  for (auto& t : ranks) t.join();
  EXPECT_NE(errors[0].find("missing rank(s) 2"), std::string::npos) << errors[0];
  EXPECT_NE(errors[1].find("rank 1/3 (tcp): joining the world"), std::string::npos) << errors[1];
  fs::remove_all(dir);
}

TEST(TcpCommunicatorTest, StaleRendezvousFileIsRefused) {
  const auto dir = FreshDir();
  std::ofstream(dir / kTcpAddressFile) << "somewhere 1\n";
  WorldInfo world;
  world.world_size = 2;
  world.rendezvous = "file:" + dir.string();
  try {
    ConnectTcp(world, Timeout(300));
    FAIL() << "joined through a stale address";
  } catch (const CollectiveError& e) {
    EXPECT_NE(std::string(e.what()).find("fresh rendezvous folder"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace iisan::distributed
