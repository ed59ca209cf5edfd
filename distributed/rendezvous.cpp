// Rank resolution from flags and launcher environments, rendezvous addresses, Slurm host lists.
#include "distributed/rendezvous.h"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <glog/logging.h>

extern char** environ;

namespace iisan::distributed {
namespace {

// One launcher's view of the world, as read from its variables.
struct SourceView {
  std::string label;  // "mpirun's environment", used in messages
  int rank = 0;
  int world_size = 1;
  std::optional<int> local_rank;
};

const std::string* Find(const Environment& env, const std::string& name) {
  auto it = env.find(name);
  return it == env.end() ? nullptr : &it->second;
}

int ParseInt(std::string_view text, std::string_view what) {
  int value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || error != std::errc() || end != text.data() + text.size()) {
    throw RendezvousError(std::string(what) + "='" + std::string(text) + "' is not an integer");
  }
  return value;
}

std::optional<int> ReadInt(const Environment& env, const std::string& name) {
  const auto* value = Find(env, name);
  if (!value) return std::nullopt;
  return ParseInt(*value, name);
}

// Reads a launcher's rank / size / local-rank variables: all absent is "not this launcher";
// a rank without a size (or the reverse, or a lone local rank) is an error.
std::optional<SourceView> ReadSource(const Environment& env, std::string label, const std::string& rank_var,
                                     const std::string& size_var, const std::string& local_var) {
  const bool has_rank = Find(env, rank_var), has_size = Find(env, size_var), has_local = Find(env, local_var);
  if (!has_rank && !has_size && !has_local) return std::nullopt;
  if (!has_rank || !has_size) {
    throw RendezvousError(label + " is incomplete: " + (has_rank ? size_var : rank_var) + " is not set while " +
                          (has_rank ? rank_var : has_size ? size_var : local_var) + " is");
  }
  SourceView view;
  view.label = std::move(label);
  view.rank = *ReadInt(env, rank_var);
  view.world_size = *ReadInt(env, size_var);
  view.local_rank = ReadInt(env, local_var);
  return view;
}

std::string SlurmMasterAddress(const Environment& env) {
  const std::string* nodes = nullptr;
  for (const char* name : {"SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST"}) {
    if ((nodes = Find(env, name))) break;
  }
  if (!nodes) {
    throw RendezvousError("Slurm's environment has no SLURM_STEP_NODELIST / SLURM_NODELIST to find rank 0's node; set " +
                          std::string(kEnvRendezvous) + "=tcp:HOST:PORT");
  }
  const auto hosts = ExpandSlurmHostList(*nodes);
  int port = kDefaultMasterPortBase;
  if (auto explicit_port = ReadInt(env, kEnvMasterPort)) {
    port = *explicit_port;
  } else if (auto job = ReadInt(env, "SLURM_JOB_ID")) {
    port += *job % 1000;
  }
  return "tcp:" + hosts.front() + ":" + std::to_string(port);
}

std::optional<SourceView> ReadSlurm(const Environment& env) {
  if (!Find(env, "SLURM_PROCID")) return std::nullopt;
  if (!Find(env, "SLURM_STEP_ID") && !Find(env, "SLURM_STEPID")) {
    if (auto tasks = ReadInt(env, "SLURM_NTASKS"); tasks && *tasks > 1) {
      LOG(WARNING) << "inside a Slurm allocation of " << *tasks
                   << " tasks but not started by srun: running as this one process; use srun to start the ranks";
    }
    return std::nullopt;
  }
  const char* size_var = Find(env, "SLURM_STEP_NUM_TASKS") ? "SLURM_STEP_NUM_TASKS" : "SLURM_NTASKS";
  auto view = ReadSource(env, "Slurm's environment", "SLURM_PROCID", size_var, "SLURM_LOCALID");
  if (!view->local_rank) throw RendezvousError("Slurm's environment sets SLURM_PROCID but not SLURM_LOCALID");
  return view;
}

std::string_view SourceName(WorldSource source) {
  switch (source) {
    case WorldSource::kSingleProcess: return "a single process";
    case WorldSource::kFlags: return "command-line flags";
    case WorldSource::kMpirun: return "mpirun's environment";
    case WorldSource::kSlurm: return "Slurm's environment";
    case WorldSource::kLauncher: return "iisan launch's environment";
  }
  return "?";
}

void Validate(const WorldInfo& world) {
  std::ostringstream problem;
  if (world.world_size < 1) {
    problem << "world size " << world.world_size << " is not positive";
  } else if (world.rank < 0 || world.rank >= world.world_size) {
    problem << "rank " << world.rank << " is outside 0.." << world.world_size - 1;
  } else if (world.local_rank < 0 || world.local_rank >= world.world_size) {
    problem << "local rank " << world.local_rank << " is outside 0.." << world.world_size - 1;
  } else if (world.world_size > 1 && world.rendezvous.empty()) {
    problem << "a world of " << world.world_size << " needs a rendezvous: --rendezvous or " << kEnvRendezvous
            << " = mpi, tcp:HOST:PORT or file:DIR";
  }
  if (!problem.str().empty()) throw RendezvousError(problem.str() + " (from " + std::string(SourceName(world.source)) + ")");
  if (!world.rendezvous.empty()) ParseRendezvous(world.rendezvous);
}

// More hosts than any cluster has, and longer names than DNS allows: a list that expands past
// them ("n[0-2147483647]", a megabyte of name) is corrupt, and expanding it would exhaust the
// memory (or, at INT_MAX, never end).
constexpr size_t kMaxSlurmHosts = size_t{1} << 16;
constexpr size_t kMaxHostName = 255;

// Expands every bracket group of one host-list entry (which may hold several).
void ExpandEntry(const std::string& entry, std::vector<std::string>& out) {
  const auto open = entry.find('[');
  if (open == std::string::npos) {
    if (entry.size() > kMaxHostName) {
      throw RendezvousError("Slurm host list names a host of " + std::to_string(entry.size()) + " characters ('" +
                            entry.substr(0, 60) + "...'); is SLURM_NODELIST corrupt?");
    }
    if (out.size() >= kMaxSlurmHosts) {
      throw RendezvousError("Slurm host list expands to more than " + std::to_string(kMaxSlurmHosts) +
                            " hosts (at entry '" + entry + "'); is SLURM_NODELIST corrupt?");
    }
    out.push_back(entry);
    return;
  }
  const auto close = entry.find(']', open);
  if (close == std::string::npos) throw RendezvousError("Slurm host list entry '" + entry + "' has an unclosed '['");
  const std::string prefix = entry.substr(0, open), rest = entry.substr(close + 1);
  std::stringstream ranges(entry.substr(open + 1, close - open - 1));
  std::string range;
  while (std::getline(ranges, range, ',')) {
    const auto dash = range.find('-');
    const std::string first = range.substr(0, dash);
    const int lo = ParseInt(first, "Slurm host range '" + range + "'");
    const int hi = dash == std::string::npos ? lo : ParseInt(range.substr(dash + 1), "Slurm host range '" + range + "'");
    if (hi < lo) throw RendezvousError("Slurm host range '" + range + "' is descending");
    if (static_cast<int64_t>(hi) - lo >= static_cast<int64_t>(kMaxSlurmHosts)) {
      throw RendezvousError("Slurm host range '" + range + "' holds more than " + std::to_string(kMaxSlurmHosts) +
                            " hosts; is SLURM_NODELIST corrupt?");
    }
    for (int64_t v = lo; v <= hi; ++v) {
      std::string number = std::to_string(v);
      // "node[01-10]": the width of the first bound is kept, as Slurm does.
      if (number.size() < first.size()) number.insert(0, first.size() - number.size(), '0');
      ExpandEntry(prefix + number + rest, out);
    }
  }
}

}  // namespace

std::string WorldInfo::Describe() const {
  std::ostringstream out;
  out << "rank " << rank << " of " << world_size << " (local " << local_rank << "), from " << SourceName(source);
  if (!rendezvous.empty()) out << ", rendezvous " << rendezvous;
  return out.str();
}

Environment ProcessEnvironment() {
  Environment env;
  for (char** entry = environ; *entry; ++entry) {
    std::string_view text(*entry);
    const auto eq = text.find('=');
    if (eq != std::string_view::npos) env.emplace(text.substr(0, eq), text.substr(eq + 1));
  }
  return env;
}

WorldInfo ResolveWorld(const WorldFlags& flags, const Environment& env) {
  const auto mpirun = ReadSource(env, "mpirun's environment", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
                                 "OMPI_COMM_WORLD_LOCAL_RANK");
  const auto launcher = ReadSource(env, "iisan launch's environment", kEnvRank, kEnvWorldSize, kEnvLocalRank);
  if (mpirun && launcher && (mpirun->rank != launcher->rank || mpirun->world_size != launcher->world_size)) {
    std::ostringstream message;
    message << "mpirun's environment (rank " << mpirun->rank << " of " << mpirun->world_size
            << ") contradicts iisan launch's (rank " << launcher->rank << " of " << launcher->world_size
            << "): start the ranks with one of them";
    throw RendezvousError(message.str());
  }
  const auto* rendezvous_env = Find(env, kEnvRendezvous);

  WorldInfo world;
  std::optional<SourceView> source;
  if (mpirun) {
    source = mpirun;
    world.source = WorldSource::kMpirun;
    world.rendezvous = "mpi";
  } else if (launcher) {
    source = launcher;
    world.source = WorldSource::kLauncher;
  } else if ((source = ReadSlurm(env))) {
    world.source = WorldSource::kSlurm;
    if (source->world_size > 1 && !rendezvous_env) world.rendezvous = SlurmMasterAddress(env);
  } else if (rendezvous_env && !flags.rank && !flags.world_size) {
    throw RendezvousError(std::string(kEnvRendezvous) + " is set but no rank is: set " + kEnvRank + " and " +
                          kEnvWorldSize + ", or start the ranks with mpirun, srun or iisan launch");
  }
  if (source) {
    world.rank = source->rank;
    world.world_size = source->world_size;
    // Without a local rank, all ranks are taken to share one node.
    world.local_rank = source->local_rank.value_or(source->rank);
  }
  if (rendezvous_env) world.rendezvous = *rendezvous_env;

  if (flags.rank || flags.world_size) {
    // Together or not at all: a rank from the flags in a size from the environment (or the
    // reverse) describes a world that nobody started.
    if (!flags.rank || !flags.world_size) {
      throw RendezvousError(flags.rank ? "--rank needs --world-size" : "--world-size needs --rank");
    }
    world.source = WorldSource::kFlags;
    world.rank = *flags.rank;
    world.world_size = *flags.world_size;
    world.local_rank = world.rank;
  }
  if (flags.local_rank) world.local_rank = *flags.local_rank;
  if (flags.rendezvous) world.rendezvous = *flags.rendezvous;
  Validate(world);
  if (world.world_size > 1 && (world.rendezvous.starts_with("tcp:") || world.rendezvous.starts_with("file:"))) {
    world.secret = JobSecret(env);
    world.local_only = Find(env, kEnvLocalJob) != nullptr && *Find(env, kEnvLocalJob) == "1";
  }
  return world;
}

std::string RandomSecret() {
  unsigned char bytes[16] = {};
  std::ifstream urandom("/dev/urandom", std::ios::binary);
  if (!urandom.read(reinterpret_cast<char*>(bytes), sizeof(bytes))) {
    throw RendezvousError("cannot read /dev/urandom for the job's secret");
  }
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned char b : bytes) out += {hex[b >> 4], hex[b & 15]};
  return out;
}

namespace {

// FNV-1a over the text with two bases: 32 hex digits that bind the user's key to one job step.
std::string KeyedDigest(const std::string& text) {
  std::string out;
  for (uint64_t basis : {0xcbf29ce484222325ULL, 0x84222325cbf29ce4ULL}) {
    uint64_t h = basis;
    for (unsigned char c : text) h = (h ^ c) * 0x100000001b3ULL;
    char buffer[17];
    std::snprintf(buffer, sizeof(buffer), "%016llx", static_cast<unsigned long long>(h));
    out += buffer;
  }
  return out;
}

// ~/.iisan/slurm-secret, made (mode 0600, in a 0700 folder) when missing.
std::string UserKey(const Environment& env) {
  const std::string* home = Find(env, "HOME");
  const std::filesystem::path dir = std::filesystem::path(*home) / ".iisan", path = dir / "slurm-secret";
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  std::filesystem::permissions(dir, std::filesystem::perms::owner_all, error);
  if (!std::filesystem::exists(path)) {
    // Several ranks may get here at once: link() creates the name only if it does not exist, so
    // the first one wins and every rank reads the winner.
    const auto temp = dir / ("slurm-secret.tmp." + std::to_string(::getpid()));
    {
      std::ofstream out(temp);
      out << RandomSecret() << "\n";
    }
    std::filesystem::permissions(temp, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write, error);
    std::filesystem::create_hard_link(temp, path, error);
    std::filesystem::remove(temp, error);
  }
  std::string key;
  // A key is 32 hex digits: anything past a few KiB is not one, and is not read.
  if (std::filesystem::file_size(path, error) > 4096 || error || !(std::ifstream(path) >> key) || key.size() < 16) {
    throw RendezvousError(path.string() + ": unreadable, too short or too long; remove it (a new one is made) or set " +
                          std::string(kEnvJobSecret));
  }
  return key;
}

}  // namespace

std::string JobSecret(const Environment& env) {
  if (const std::string* secret = Find(env, kEnvJobSecret); secret && !secret->empty()) return *secret;
  const std::string* job = Find(env, "SLURM_JOB_ID");
  if (!job) return "";
  const std::string* home = Find(env, "HOME");
  if (!home || home->empty()) {
    LOG(WARNING) << "HOME is not set, so no secret can be derived from ~/.iisan/slurm-secret: set "
                 << kEnvJobSecret << " for every rank, or the TCP join has no secret";
    return "";
  }
  const std::string* step = Find(env, "SLURM_STEP_ID");
  return KeyedDigest(UserKey(env) + "/" + *job + "/" + (step ? *step : std::string("batch")));
}

RendezvousAddress ParseRendezvous(std::string_view spec) {
  RendezvousAddress address;
  auto fail = [&](std::string_view why) -> RendezvousError {
    return RendezvousError("rendezvous '" + std::string(spec) + "': " + std::string(why) +
                           " (expected mpi, tcp:HOST:PORT or file:DIR)");
  };
  if (spec == "mpi") {
    address.kind = RendezvousAddress::Kind::kMpi;
  } else if (spec.starts_with("tcp:")) {
    const auto rest = spec.substr(4);
    const auto colon = rest.rfind(':');
    if (colon == std::string_view::npos || colon == 0) throw fail("no HOST:PORT");
    address.kind = RendezvousAddress::Kind::kTcp;
    address.host = std::string(rest.substr(0, colon));
    address.port = ParseInt(rest.substr(colon + 1), "rendezvous port");
    if (address.port < 1 || address.port > 65535) throw fail("port outside 1..65535");
  } else if (spec.starts_with("file:")) {
    if (spec.size() == 5) throw fail("no directory");
    address.kind = RendezvousAddress::Kind::kFile;
    address.dir = std::string(spec.substr(5));
  } else {
    throw fail("unknown kind");
  }
  return address;
}

std::vector<std::string> ExpandSlurmHostList(std::string_view list) {
  std::vector<std::string> hosts;
  // ExpandEntry recurses once per bracket group; real names have one or two ("rack[1-2]-n[01-04]").
  constexpr size_t kMaxGroups = 8;
  auto expand = [&](const std::string& entry) {
    if (entry.empty()) return;
    if (entry.size() > 4 * kMaxHostName) {
      throw RendezvousError("Slurm host list entry of " + std::to_string(entry.size()) + " characters ('" +
                            entry.substr(0, 60) + "...'); is SLURM_NODELIST corrupt?");
    }
    if (std::count(entry.begin(), entry.end(), '[') > static_cast<std::ptrdiff_t>(kMaxGroups)) {
      throw RendezvousError("Slurm host list entry '" + entry + "' has more than " +
                            std::to_string(kMaxGroups) + " bracket groups; is SLURM_NODELIST corrupt?");
    }
    ExpandEntry(entry, hosts);
  };
  std::string entry;
  int depth = 0;
  for (char c : list) {
    if (c == '[') ++depth;
    if (c == ']') --depth;
    if (c == ',' && depth == 0) {
      expand(entry);
      entry.clear();
    } else {
      entry += c;
    }
  }
  expand(entry);
  if (hosts.empty()) throw RendezvousError("Slurm host list '" + std::string(list) + "' names no host");
  return hosts;
}

Environment LauncherEnvironment(int rank, int world_size, int local_rank, std::string_view rendezvous) {
  return {{kEnvRank, std::to_string(rank)},
          {kEnvWorldSize, std::to_string(world_size)},
          {kEnvLocalRank, std::to_string(local_rank)},
          {kEnvRendezvous, std::string(rendezvous)}};
}

}  // namespace iisan::distributed
