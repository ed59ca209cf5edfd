// The TCP backend with threads as ranks (each with its own sockets, as processes would have):
// collectives, both rendezvous kinds, and joins that fail loudly. Failures mid-collective end
// the process, so they are tested across processes (tests/distributed/CMakeLists.txt).
#include "distributed/tcp_communicator.h"

#include <cstdlib>
#include <cstring>
#include <future>
#include <thread>
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

// Raw bytes at rank 0's published port, as a stranger would send them. `connected` (when given)
// is set once the connection is made.
void SendRaw(const fs::path& dir, const std::string& bytes, bool stay_silent_seconds = false,
             std::promise<void>* connected = nullptr) {
  std::string host;
  int port = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!(std::ifstream(dir / kTcpAddressFile) >> host >> port)) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "rank 0 never published its address";
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  auto socket = TcpSocket::Connect("127.0.0.1", port, deadline);
  if (connected) connected->set_value();
  if (!bytes.empty()) socket.SendAll(bytes.data(), bytes.size(), deadline);
  if (stay_silent_seconds) std::this_thread::sleep_for(std::chrono::seconds(7));
}

// Strangers at the port before the real rank: garbage, a hello without the job's secret, a hello
// for a rank that does not exist, and a connection that never speaks. Each is dropped and
// logged, none is fatal, and the real rank then joins.
TEST(TcpCommunicatorTest, StrayConnectionsAreDroppedAndTheJoinGoesOn) {
  const auto dir = FreshDir();
  std::unique_ptr<Communicator> hub, peer;
  std::exception_ptr hub_error, peer_error;
  std::thread rank0([&] {
    WorldInfo world;
    world.world_size = 2;
    world.rendezvous = "file:" + dir.string();
    world.secret = "the-job-secret";
    world.local_only = true;
    try {
      hub = ConnectTcp(world, Timeout(30000));
    } catch (...) {
      hub_error = std::current_exception();
    }
  });
  // The silent stranger must be connected before the real rank: once every rank has joined,
  // rank 0 removes its published address.
  std::promise<void> silent_connected;
  std::thread silent([&] { SendRaw(dir, "", /*stay_silent_seconds=*/true, &silent_connected); });
  silent_connected.get_future().wait();
  SendRaw(dir, std::string(200, 'x'));
  // A well-formed hello of rank 1 with another secret: magic "ISAN", rank, world, 64 bytes.
  std::string forged(4 + 4 + 4 + 64, '\0');
  const uint32_t magic = 0x4e415349;
  const int32_t rank = 1, world_size = 2;
  std::memcpy(forged.data(), &magic, 4);
  std::memcpy(forged.data() + 4, &rank, 4);
  std::memcpy(forged.data() + 8, &world_size, 4);
  std::memcpy(forged.data() + 12, "guessed", 7);
  SendRaw(dir, forged);
  std::string ghost = forged;
  const int32_t no_such_rank = 7;
  std::memcpy(ghost.data() + 4, &no_such_rank, 4);
  std::memcpy(ghost.data() + 12, "the-job-secret", 14);
  SendRaw(dir, ghost);
  WorldInfo world;
  world.rank = 1;
  world.world_size = 2;
  world.rendezvous = "file:" + dir.string();
  world.secret = "the-job-secret";
  try {
    peer = ConnectTcp(world, Timeout(30000));
  } catch (...) {
    peer_error = std::current_exception();
  }
  rank0.join();
  silent.join();
  if (hub_error) std::rethrow_exception(hub_error);
  if (peer_error) std::rethrow_exception(peer_error);
  std::vector<std::unique_ptr<Communicator>> comms;
  comms.push_back(std::move(hub));
  comms.push_back(std::move(peer));
  testing::RunRanks(comms, [](Communicator& comm) {
    auto t = torch::full({4}, comm.rank() + 1.0);
    comm.StartAllReduce({t}, ReduceOp::kSum)->Wait();
    EXPECT_TRUE(torch::equal(t, torch::full({4}, 3.0)));
  });
  fs::remove_all(dir);
}

TEST(TcpCommunicatorTest, ARankWithoutTheSecretNeverJoins) {
  const auto dir = FreshDir();
  std::vector<std::string> errors(2);
  std::vector<std::thread> ranks;
  for (int r = 0; r < 2; ++r) {
    ranks.emplace_back([&, r] {
      WorldInfo world;
      world.rank = r;
      world.world_size = 2;
      world.rendezvous = "file:" + dir.string();
      world.secret = r == 0 ? "right" : "wrong";
      try {
        ConnectTcp(world, Timeout(1500));
      } catch (const CollectiveError& e) {
        errors[r] = e.what();
      }
    });
  }
  for (auto& t : ranks) t.join();
  EXPECT_NE(errors[0].find("missing rank(s) 1"), std::string::npos) << errors[0];
  EXPECT_NE(errors[1].find("rank 1/2 (tcp): joining the world"), std::string::npos) << errors[1];
  fs::remove_all(dir);
}

TEST(TcpCommunicatorTest, TheJobSecretComesFromTheLauncherOrTheSlurmJob) {
  EXPECT_EQ(JobSecret({{kEnvJobSecret, "given"}}), "given");
  EXPECT_EQ(JobSecret({}), "") << "no launcher, no Slurm job: no secret";
  EXPECT_EQ(JobSecret({{"SLURM_JOB_ID", "41"}}), "") << "no HOME: no key to derive it from (a warning says so)";
  const auto home = FreshDir();
  const Environment job{{"HOME", home.string()}, {"SLURM_JOB_ID", "41"}, {"SLURM_STEP_ID", "0"}};
  const auto secret = JobSecret(job);
  EXPECT_EQ(secret.size(), 32u);
  EXPECT_EQ(JobSecret(job), secret) << "every rank of the step derives the same";
  auto other = job;
  other["SLURM_JOB_ID"] = "42";
  EXPECT_NE(JobSecret(other), secret) << "another job, another secret";
  const auto key = home / ".iisan" / "slurm-secret";
  ASSERT_TRUE(fs::exists(key));
  EXPECT_EQ(fs::status(key).permissions() & (fs::perms::group_all | fs::perms::others_all), fs::perms::none);
  // Another user's key (another HOME) gives another secret for the same job.
  const auto stranger = FreshDir();
  auto theirs = job;
  theirs["HOME"] = stranger.string();
  EXPECT_NE(JobSecret(theirs), secret);
  EXPECT_NE(RandomSecret(), RandomSecret());
  fs::remove_all(home);
  fs::remove_all(stranger);
}

}  // namespace
}  // namespace iisan::distributed
