// Rank resolution from each launcher's environment, the precedence of flags, and the loud
// failures: partial, malformed and contradictory settings never become a world of one.
#include "distributed/rendezvous.h"

#include <gtest/gtest.h>

namespace iisan::distributed {
namespace {

WorldInfo Resolve(const Environment& env, const WorldFlags& flags = {}) { return ResolveWorld(flags, env); }

// Expects a RendezvousError whose message contains `fragment`.
void ExpectError(const Environment& env, const WorldFlags& flags, const std::string& fragment) {
  try {
    const auto world = ResolveWorld(flags, env);
    ADD_FAILURE() << "resolved to " << world.Describe() << ", expected an error about '" << fragment << "'";
  } catch (const RendezvousError& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

TEST(RendezvousTest, NothingSetIsASingleProcess) {
  const auto world = Resolve({{"PATH", "/bin"}});
  EXPECT_EQ(world.rank, 0);
  EXPECT_EQ(world.world_size, 1);
  EXPECT_EQ(world.source, WorldSource::kSingleProcess);
  EXPECT_TRUE(world.rendezvous.empty());
}

TEST(RendezvousTest, MpirunEnvironment) {
  const auto world =
      Resolve({{"OMPI_COMM_WORLD_RANK", "3"}, {"OMPI_COMM_WORLD_SIZE", "4"}, {"OMPI_COMM_WORLD_LOCAL_RANK", "1"}});
  EXPECT_EQ(world.rank, 3);
  EXPECT_EQ(world.world_size, 4);
  EXPECT_EQ(world.local_rank, 1);
  EXPECT_EQ(world.source, WorldSource::kMpirun);
  EXPECT_EQ(world.rendezvous, "mpi");
}

TEST(RendezvousTest, MpirunInsideASlurmAllocationIgnoresTheBatchStepsSlurmRank) {
  // Every rank that mpirun starts inherits the batch script's SLURM_PROCID=0.
  const auto world = Resolve({{"OMPI_COMM_WORLD_RANK", "2"},
                              {"OMPI_COMM_WORLD_SIZE", "4"},
                              {"SLURM_PROCID", "0"},
                              {"SLURM_NTASKS", "4"},
                              {"SLURM_STEP_ID", "0"},
                              {"SLURM_LOCALID", "0"}});
  EXPECT_EQ(world.rank, 2);
  EXPECT_EQ(world.source, WorldSource::kMpirun);
}

TEST(RendezvousTest, SlurmStepUsesTcpOnTheFirstNodeWithAPortFromTheJobId) {
  const auto world = Resolve({{"SLURM_PROCID", "5"},
                              {"SLURM_LOCALID", "1"},
                              {"SLURM_NTASKS", "8"},
                              {"SLURM_STEP_NUM_TASKS", "6"},
                              {"SLURM_STEP_ID", "0"},
                              {"SLURM_JOB_ID", "123456"},
                              {"SLURM_STEP_NODELIST", "gpu[07-09],cpu1"},
                              {"SLURM_NODELIST", "other"}});
  EXPECT_EQ(world.rank, 5);
  EXPECT_EQ(world.world_size, 6);  // the step's tasks, not the allocation's
  EXPECT_EQ(world.local_rank, 1);
  EXPECT_EQ(world.source, WorldSource::kSlurm);
  EXPECT_EQ(world.rendezvous, "tcp:gpu07:" + std::to_string(kDefaultMasterPortBase + 456));
}

TEST(RendezvousTest, SlurmRendezvousAndPortCanBeOverridden) {
  Environment env = {{"SLURM_PROCID", "0"},       {"SLURM_LOCALID", "0"},     {"SLURM_NTASKS", "2"},
                     {"SLURM_STEP_ID", "1"},      {"SLURM_NODELIST", "n1"},   {"IISAN_MASTER_PORT", "4000"}};
  EXPECT_EQ(Resolve(env).rendezvous, "tcp:n1:4000");
  env["IISAN_RENDEZVOUS"] = "mpi";
  EXPECT_EQ(Resolve(env).rendezvous, "mpi");
}

TEST(RendezvousTest, SlurmBatchScriptWithoutSrunIsOneProcess) {
  const auto world = Resolve({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "4"}, {"SLURM_NODELIST", "n[1-2]"}});
  EXPECT_EQ(world.world_size, 1);
  EXPECT_EQ(world.source, WorldSource::kSingleProcess);
}

TEST(RendezvousTest, LauncherEnvironmentRoundTrips) {
  const auto world = Resolve(LauncherEnvironment(2, 3, 2, "file:/tmp/x"));
  EXPECT_EQ(world.rank, 2);
  EXPECT_EQ(world.world_size, 3);
  EXPECT_EQ(world.local_rank, 2);
  EXPECT_EQ(world.source, WorldSource::kLauncher);
  EXPECT_EQ(world.rendezvous, "file:/tmp/x");
}

TEST(RendezvousTest, ExplicitFlagsWin) {
  Environment env = {{"OMPI_COMM_WORLD_RANK", "1"}, {"OMPI_COMM_WORLD_SIZE", "2"}, {"OMPI_COMM_WORLD_LOCAL_RANK", "1"}};
  WorldFlags flags;
  flags.rendezvous = "tcp:head:5000";
  flags.local_rank = 0;
  auto world = Resolve(env, flags);
  EXPECT_EQ(world.rank, 1);
  EXPECT_EQ(world.local_rank, 0);
  EXPECT_EQ(world.rendezvous, "tcp:head:5000");

  flags = {};
  flags.rank = 0;
  flags.world_size = 1;
  world = Resolve(env, flags);
  EXPECT_EQ(world.world_size, 1);
  EXPECT_EQ(world.local_rank, 0);
  EXPECT_EQ(world.source, WorldSource::kFlags);

  flags.rank.reset();  // a size from the flags with mpirun's rank: a world nobody started
  ExpectError(env, flags, "--world-size needs --rank");
}

TEST(RendezvousTest, FlagsAloneDescribeAWorld) {
  WorldFlags flags;
  flags.rank = 1;
  flags.world_size = 2;
  flags.rendezvous = "tcp:127.0.0.1:29999";
  const auto world = Resolve({}, flags);
  EXPECT_EQ(world.rank, 1);
  EXPECT_EQ(world.local_rank, 1);
  EXPECT_EQ(world.source, WorldSource::kFlags);
}

TEST(RendezvousTest, PartialEnvironmentsAreErrors) {
  ExpectError({{"OMPI_COMM_WORLD_RANK", "1"}}, {}, "OMPI_COMM_WORLD_SIZE is not set");
  ExpectError({{"IISAN_WORLD_SIZE", "2"}}, {}, "IISAN_RANK is not set");
  ExpectError({{"IISAN_LOCAL_RANK", "0"}}, {}, "IISAN_RANK is not set");
  ExpectError({{"IISAN_RENDEZVOUS", "file:/tmp/r"}}, {}, "no rank is");
  ExpectError({{"SLURM_PROCID", "0"}, {"SLURM_STEP_ID", "0"}, {"SLURM_LOCALID", "0"}}, {}, "SLURM_NTASKS is not set");
  ExpectError({{"SLURM_PROCID", "0"}, {"SLURM_STEP_ID", "0"}, {"SLURM_NTASKS", "2"}}, {}, "SLURM_LOCALID");
  ExpectError({{"SLURM_PROCID", "0"}, {"SLURM_STEP_ID", "0"}, {"SLURM_NTASKS", "2"}, {"SLURM_LOCALID", "0"}}, {},
              "NODELIST");
  WorldFlags rank_only;
  rank_only.rank = 0;
  ExpectError({}, rank_only, "--rank needs --world-size");
}

TEST(RendezvousTest, MalformedValuesAreErrors) {
  ExpectError({{"IISAN_RANK", "1x"}, {"IISAN_WORLD_SIZE", "2"}, {"IISAN_RENDEZVOUS", "file:/d"}}, {},
              "IISAN_RANK='1x' is not an integer");
  ExpectError({{"IISAN_RANK", "2"}, {"IISAN_WORLD_SIZE", "2"}, {"IISAN_RENDEZVOUS", "file:/d"}}, {},
              "rank 2 is outside 0..1");
  ExpectError({{"IISAN_RANK", "0"}, {"IISAN_WORLD_SIZE", "2"}}, {}, "needs a rendezvous");
  ExpectError({{"IISAN_RANK", "0"}, {"IISAN_WORLD_SIZE", "2"}, {"IISAN_RENDEZVOUS", "udp:x:1"}}, {}, "unknown kind");
  ExpectError({{"IISAN_RANK", "0"}, {"IISAN_WORLD_SIZE", "2"}, {"IISAN_RENDEZVOUS", "tcp:host:99999"}}, {},
              "port outside");
}

TEST(RendezvousTest, ContradictoryLaunchersAreAnError) {
  ExpectError({{"OMPI_COMM_WORLD_RANK", "1"},
               {"OMPI_COMM_WORLD_SIZE", "2"},
               {"IISAN_RANK", "0"},
               {"IISAN_WORLD_SIZE", "2"},
               {"IISAN_RENDEZVOUS", "file:/d"}},
              {}, "contradicts");
}

TEST(RendezvousTest, ParsesRendezvousAddresses) {
  auto tcp = ParseRendezvous("tcp:node-1.cluster:29500");
  EXPECT_EQ(tcp.kind, RendezvousAddress::Kind::kTcp);
  EXPECT_EQ(tcp.host, "node-1.cluster");
  EXPECT_EQ(tcp.port, 29500);
  EXPECT_EQ(ParseRendezvous("file:/shared/run").dir, "/shared/run");
  EXPECT_EQ(ParseRendezvous("mpi").kind, RendezvousAddress::Kind::kMpi);
  EXPECT_THROW(ParseRendezvous("tcp:29500"), RendezvousError);
  EXPECT_THROW(ParseRendezvous("file:"), RendezvousError);
}

TEST(RendezvousTest, ExpandsSlurmHostLists) {
  EXPECT_EQ(ExpandSlurmHostList("node[01-03,07],login"),
            (std::vector<std::string>{"node01", "node02", "node03", "node07", "login"}));
  EXPECT_EQ(ExpandSlurmHostList("r[1-2]-n[8-9]"), (std::vector<std::string>{"r1-n8", "r1-n9", "r2-n8", "r2-n9"}));
  EXPECT_EQ(ExpandSlurmHostList("single"), (std::vector<std::string>{"single"}));
  EXPECT_THROW(ExpandSlurmHostList("node[3-1]"), RendezvousError);
  EXPECT_THROW(ExpandSlurmHostList("node[1-2"), RendezvousError);
}

// Found by RendezvousFuzzTest: a range to INT_MAX never ended (its counter overflowed), a huge
// range or a huge name exhausted the memory. Now each is a RendezvousError, at once.
TEST(RendezvousTest, HostListsThatWouldNotFitInMemoryAreRefused) {
  EXPECT_EQ(ExpandSlurmHostList("n[1-65536]").size(), 65536u);
  for (const std::string& list : std::vector<std::string>{"n[0-2147483647]", "n[1-65537]", "a[1-300]b[1-300]", "n[2147483647-2147483647]x[0-70000]",
                                 std::string(300, 'h'), std::string(100000, 'h') + "[1-2]", "n[1][1][1][1][1][1][1][1][1]"}) {
    try {
      ExpandSlurmHostList(list);
      ADD_FAILURE() << list.substr(0, 80) << " was expanded";
    } catch (const RendezvousError& error) {
      EXPECT_NE(std::string(error.what()).find("SLURM_NODELIST corrupt"), std::string::npos) << error.what();
    }
  }
  EXPECT_EQ(ExpandSlurmHostList("n[2147483647]"), std::vector<std::string>{"n2147483647"});
}

}  // namespace
}  // namespace iisan::distributed
