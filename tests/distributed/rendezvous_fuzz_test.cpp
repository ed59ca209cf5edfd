// The rendezvous under fuzzing (tests/fuzz_mutator.h): damaged launcher environments, rendezvous
// addresses and Slurm host lists resolve to a consistent world or raise a RendezvousError; damaged
// hellos sent to rank 0 over a real loopback socket are dropped and the real rank still joins;
// damaged welcomes from a fake rank 0 make the joining rank fail with a CollectiveError that
// names the address. Nothing else escapes, nothing crashes or hangs.
#include "distributed/rendezvous.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <glog/logging.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "distributed/tcp_communicator.h"
#include "distributed/tcp_socket.h"
#include "tests/fuzz_mutator.h"

namespace iisan::distributed {
namespace {

namespace fs = std::filesystem;
using iisan::testing::FuzzMutator;
using iisan::testing::FuzzRequire;
using iisan::testing::RunFuzz;

fs::path FreshDir(const std::string& name) {
  const auto dir = fs::path(::testing::TempDir()) / ("rendezvous_fuzz_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

// "NAME=VALUE" lines to an environment.
Environment ParseEnvironment(const std::string& text) {
  Environment env;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    const auto eq = line.find('=');
    if (eq != std::string::npos) env[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return env;
}

TEST(RendezvousFuzzTest, DamagedEnvironmentsResolveToAConsistentWorldOrRefuse) {
  // A world whose size needs a TCP secret derives it from HOME: keep that inside a scratch folder.
  const auto home = FreshDir("home");
  const int saved_level = FLAGS_minloglevel;
  FLAGS_minloglevel = google::GLOG_ERROR;  // Slurm allocations without srun log a warning each
  FuzzMutator mutator(
      601,
      {"OMPI_COMM_WORLD_RANK=1\nOMPI_COMM_WORLD_SIZE=4\nOMPI_COMM_WORLD_LOCAL_RANK=1\n",
       "IISAN_RANK=2\nIISAN_WORLD_SIZE=3\nIISAN_LOCAL_RANK=0\nIISAN_RENDEZVOUS=tcp:node1:29500\n"
       "IISAN_JOB_SECRET=abc\nIISAN_LOCAL_JOB=1\n",
       "SLURM_PROCID=3\nSLURM_LOCALID=1\nSLURM_STEP_ID=0\nSLURM_STEP_NUM_TASKS=8\nSLURM_JOB_ID=4242\n"
       "SLURM_STEP_NODELIST=gpu-a[01-03,07],gpu-b[1-2]-x\n",
       "SLURM_PROCID=0\nSLURM_NTASKS=4\nSLURM_JOB_NODELIST=n[1-4]\n",
       "IISAN_RANK=0\nIISAN_WORLD_SIZE=2\nIISAN_LOCAL_RANK=0\nIISAN_RENDEZVOUS=file:/tmp/x\nIISAN_MASTER_PORT=29501\n"},
      {"OMPI_COMM_WORLD_", "SLURM_", "IISAN_", "RANK", "SIZE", "=", "\n", "[", "]", "-", ",", "tcp:", "file:", "mpi",
       ":"});
  const auto outcome = RunFuzz<RendezvousError>(mutator, 3000, [&](const std::string& text) {
    Environment env = ParseEnvironment(text);
    env["HOME"] = home.string();
    const WorldInfo world = ResolveWorld({}, env);
    FuzzRequire(world.world_size >= 1 && world.rank >= 0 && world.rank < world.world_size, "rank within the world");
    FuzzRequire(world.local_rank >= 0 && world.local_rank < world.world_size, "local rank within the world");
    FuzzRequire(world.world_size == 1 || !world.rendezvous.empty(), "a rendezvous for a world of several");
    if (!world.rendezvous.empty()) ParseRendezvous(world.rendezvous);
  });
  EXPECT_GT(outcome.parsed, 0);
  EXPECT_GT(outcome.refused, 0);
  FLAGS_minloglevel = saved_level;
  fs::remove_all(home);
}

TEST(RendezvousFuzzTest, DamagedAddressesAndHostListsParseOrRefuse) {
  FuzzMutator addresses(602, {"mpi", "tcp:127.0.0.1:29500", "tcp:node-1.cluster:1", "file:/shared/rdv", "tcp::0"},
                        {"tcp:", "file:", ":", "65535", "65536"});
  auto outcome = RunFuzz<RendezvousError>(addresses, 3000, [](const std::string& spec) {
    const auto address = ParseRendezvous(spec);
    FuzzRequire(address.kind != RendezvousAddress::Kind::kTcp || (address.port >= 1 && address.port <= 65535),
                "a TCP port in 1..65535");
  });
  EXPECT_GT(outcome.parsed, 0);
  EXPECT_GT(outcome.refused, 0);

  FuzzMutator lists(603, {"node[01-03,07],gpu-a[1-2]-x", "n1,n2,n3", "rack[1-2]-node[001-004]", "single"},
                    {"[", "]", ",", "-", "0", "99999", "[0-65535]"});
  outcome = RunFuzz<RendezvousError>(lists, 3000, [](const std::string& list) {
    const auto hosts = ExpandSlurmHostList(list);
    FuzzRequire(!hosts.empty(), "at least one host");
  });
  EXPECT_GT(outcome.parsed, 0);
  EXPECT_GT(outcome.refused, 0);
}

// The hello a rank sends when it joins (tcp_communicator.cpp): magic "ISAN", rank, world size,
// then the job's secret zero-padded to 64 bytes.
std::string Hello(int32_t rank, int32_t world_size, const std::string& secret) {
  std::string bytes(4 + 4 + 4 + 64, '\0');
  const uint32_t magic = 0x4e415349;
  std::memcpy(bytes.data(), &magic, 4);
  std::memcpy(bytes.data() + 4, &rank, 4);
  std::memcpy(bytes.data() + 8, &world_size, 4);
  std::memcpy(bytes.data() + 12, secret.data(), secret.size());
  return bytes;
}

constexpr char kSecret[] = "the-job-secret";

// Strangers at rank 0's port, each sending a damaged hello and hanging up, before the real rank
// 1: every one is dropped, and the real rank then joins a working world.
TEST(RendezvousFuzzTest, DamagedHellosAreDroppedAndTheRealRankStillJoins) {
  const int saved_level = FLAGS_minloglevel;
  FLAGS_minloglevel = google::GLOG_ERROR;  // a warning per dropped connection
  const auto dir = FreshDir("hello");
  std::unique_ptr<Communicator> hub;
  std::exception_ptr hub_error;
  CollectiveOptions options;
  options.timeout = std::chrono::seconds(60);
  std::thread rank0([&] {
    WorldInfo world;
    world.world_size = 2;
    world.rendezvous = "file:" + dir.string();
    world.secret = kSecret;
    world.local_only = true;
    try {
      hub = ConnectTcp(world, options);
    } catch (...) {
      hub_error = std::current_exception();
    }
  });
  std::string host;
  int port = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!(std::ifstream(dir / kTcpAddressFile) >> host >> port) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const std::string valid = Hello(1, 2, kSecret);
  FuzzMutator mutator(604, {valid, Hello(0, 2, kSecret), Hello(1, 3, kSecret), Hello(1, 2, "guessed")});
  int64_t skipped = 0;
  const auto outcome = RunFuzz<SocketError>(mutator, 1000, [&](const std::string& bytes) {
    // A mutation that leaves the first 76 bytes a valid hello would rightly be let in.
    if (bytes.size() >= valid.size() && bytes.compare(0, valid.size(), valid) == 0) {
      ++skipped;
      return;
    }
    auto stranger = TcpSocket::Connect("127.0.0.1", port, std::chrono::steady_clock::now() + std::chrono::seconds(10));
    if (!bytes.empty()) stranger.SendAll(bytes.data(), bytes.size(), std::chrono::steady_clock::now() + std::chrono::seconds(10));
  });
  EXPECT_EQ(outcome.refused, 0) << "rank 0 stopped accepting strangers";
  EXPECT_LT(skipped, 300);

  WorldInfo world;
  world.rank = 1;
  world.world_size = 2;
  world.rendezvous = "file:" + dir.string();
  world.secret = kSecret;
  auto peer = ConnectTcp(world, options);
  rank0.join();
  FLAGS_minloglevel = saved_level;
  if (hub_error) std::rethrow_exception(hub_error);
  auto mine = torch::full({4}, 2.0), theirs = torch::full({4}, 1.0);
  std::thread hub_side([&] { hub->AllReduce(theirs, ReduceOp::kSum); });
  peer->AllReduce(mine, ReduceOp::kSum);
  hub_side.join();
  EXPECT_TRUE(torch::equal(mine, torch::full({4}, 3.0)));
  EXPECT_TRUE(torch::equal(theirs, torch::full({4}, 3.0)));
  fs::remove_all(dir);
}

// A fake rank 0 answers each joining rank 1 with a damaged welcome: the join either succeeds
// (the welcome is still valid) or fails with a CollectiveError naming rank 1 and the address.
TEST(RendezvousFuzzTest, DamagedWelcomesFailTheJoinNamingTheAddress) {
  auto listener = TcpSocket::Listen(0, /*loopback_only=*/true);
  const std::string rendezvous = "tcp:127.0.0.1:" + std::to_string(listener.local_port());
  const std::string valid = Hello(0, 2, kSecret);
  FuzzMutator mutator(605, {valid, Hello(0, 3, kSecret), Hello(0, 2, "guessed")});
  const auto outcome = RunFuzz<CollectiveError>(
      mutator, 1000,
      [&](const std::string& welcome) {
        std::exception_ptr hub_error;
        std::thread fake_hub([&] {
          try {
            const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
            auto peer = listener.Accept(deadline);
            std::string hello(valid.size(), '\0');
            peer.RecvAll(hello.data(), hello.size(), deadline);
            if (!welcome.empty()) peer.SendAll(welcome.data(), welcome.size(), deadline);
          } catch (...) {
            hub_error = std::current_exception();
          }
        });
        WorldInfo world;
        world.rank = 1;
        world.world_size = 2;
        world.rendezvous = rendezvous;
        world.secret = kSecret;
        CollectiveOptions options;
        options.timeout = std::chrono::seconds(10);
        try {
          ConnectTcp(world, options);
        } catch (...) {
          fake_hub.join();
          throw;
        }
        fake_hub.join();
        if (hub_error) std::rethrow_exception(hub_error);
        FuzzRequire(welcome.compare(0, valid.size(), valid) == 0, "only rank 0's own welcome is accepted");
      },
      [&](const CollectiveError& error) {
        const std::string message = error.what();
        return message.find("rank 1/2 (tcp): joining the world at " + rendezvous) != std::string::npos
                   ? ""
                   : "the error does not name the rank and address: " + message;
      });
  EXPECT_GT(outcome.parsed, 0);
  EXPECT_GT(outcome.refused, 0);
}

}  // namespace
}  // namespace iisan::distributed
