// Who this process is in the job (rank, world size, local rank) and how the ranks find each
// other, resolved from explicit flags, mpirun's environment, Slurm's, or `iisan launch`'s.
// Nothing set anywhere is a world of one; anything partial, malformed or contradictory is a
// RendezvousError, never a silent world of one.
#pragma once

#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace iisan::distributed {

// Variables that `iisan launch` sets for each process it spawns (see LauncherEnvironment).
inline constexpr const char* kEnvRank = "IISAN_RANK";
inline constexpr const char* kEnvWorldSize = "IISAN_WORLD_SIZE";
inline constexpr const char* kEnvLocalRank = "IISAN_LOCAL_RANK";
// "mpi", "tcp:HOST:PORT" (rank 0 listens on PORT) or "file:DIR" (rank 0 publishes its address
// in DIR, which must be fresh for every job and visible to every rank). Read under every
// source, so that it can override the default of mpirun ("mpi") or Slurm (tcp, see below).
inline constexpr const char* kEnvRendezvous = "IISAN_RENDEZVOUS";
// Under Slurm, rank 0 listens on this port of the step's first node; the default is
// kDefaultMasterPortBase + SLURM_JOB_ID % 1000, so that jobs sharing a node rarely collide.
inline constexpr const char* kEnvMasterPort = "IISAN_MASTER_PORT";
// The job's secret, which every rank presents when it joins a TCP world (rank 0 drops any
// connection that does not). `iisan launch` sets a fresh random one; inside a Slurm job without
// it, JobSecret derives one from the job and step ids and ~/.iisan/slurm-secret (made, mode
// 0600, by the first job that needs it: only the user's own processes can read it).
inline constexpr const char* kEnvJobSecret = "IISAN_JOB_SECRET";
// Set by `iisan launch`: every rank runs on this machine, so rank 0 listens on loopback only.
inline constexpr const char* kEnvLocalJob = "IISAN_LOCAL_JOB";
inline constexpr int kDefaultMasterPortBase = 29500;

class RendezvousError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class WorldSource { kSingleProcess, kFlags, kMpirun, kSlurm, kLauncher };

struct WorldInfo {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;  // index among the ranks of this node: selects the GPU
  WorldSource source = WorldSource::kSingleProcess;
  std::string rendezvous;  // empty for a world of one
  std::string secret;      // what every rank presents at a TCP join (JobSecret); may be empty
  bool local_only = false;  // every rank on this machine (`iisan launch`): listen on loopback

  // "rank 1 of 4 (local 1), from mpirun's environment, rendezvous mpi"
  std::string Describe() const;
};

// Command-line values. --rank and --world-size come together and replace the environment's
// world (the local rank then defaults to the rank); --local-rank and --rendezvous each override
// the value that the environment (or the rank flags) gave.
struct WorldFlags {
  std::optional<int> rank;
  std::optional<int> world_size;
  std::optional<int> local_rank;
  std::optional<std::string> rendezvous;
};

using Environment = std::map<std::string, std::string>;

Environment ProcessEnvironment();

// Sources, in order of precedence: flags (see WorldFlags), then mpirun (OMPI_COMM_WORLD_RANK,
// _SIZE, _LOCAL_RANK) or `iisan launch` (IISAN_RANK, ...), which must agree when both are set,
// then Slurm (SLURM_PROCID, SLURM_LOCALID, SLURM_STEP_NUM_TASKS or SLURM_NTASKS,
// SLURM_STEP_NODELIST or SLURM_JOB_NODELIST or SLURM_NODELIST).
// Slurm counts only inside an srun step (SLURM_STEP_ID set): a batch script inherits
// SLURM_PROCID=0 and the allocation's SLURM_NTASKS, and so does every rank that mpirun starts
// inside an allocation; neither means that Slurm started this process as one of N ranks.
WorldInfo ResolveWorld(const WorldFlags& flags, const Environment& env);

// The job's secret (see kEnvJobSecret): IISAN_JOB_SECRET, else derived inside a Slurm job, else
// empty (a TCP join then has no secret, and says so in the log).
std::string JobSecret(const Environment& env);

// A fresh random secret (32 hex digits from /dev/urandom).
std::string RandomSecret();

struct RendezvousAddress {
  enum class Kind { kNone, kMpi, kTcp, kFile };
  Kind kind = Kind::kNone;
  std::string host;  // kTcp
  int port = 0;      // kTcp
  std::string dir;   // kFile
};

RendezvousAddress ParseRendezvous(std::string_view spec);

// "node[01-03,07],gpu-a[1-2]-x" -> node01 node02 node03 node07 gpu-a1-x gpu-a2-x.
std::vector<std::string> ExpandSlurmHostList(std::string_view list);

// What `iisan launch` adds to the environment of the process it starts as `rank`.
Environment LauncherEnvironment(int rank, int world_size, int local_rank, std::string_view rendezvous);

}  // namespace iisan::distributed
