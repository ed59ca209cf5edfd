// The local Slurm cluster of the tests: ports picked free, daemons tracked by pid.
#include "tests/slurm/local_slurm.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

namespace iisan::testing {
namespace {

// Every daemon pid this process started, killed at exit too (a crashing test must not leave a
// cluster running).
std::mutex g_mutex;
std::vector<std::filesystem::path> g_pid_files;

pid_t ReadPid(const std::filesystem::path& file) {
  std::ifstream in(file);
  long pid = 0;
  return (in >> pid) && pid > 1 ? static_cast<pid_t>(pid) : 0;
}

void KillAll() {
  std::vector<pid_t> pids;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    for (const auto& file : g_pid_files) {
      if (const pid_t pid = ReadPid(file)) pids.push_back(pid);
    }
    g_pid_files.clear();
  }
  for (const pid_t pid : pids) ::kill(pid, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  for (const pid_t pid : pids) {
    while (::kill(pid, 0) == 0 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (::kill(pid, 0) == 0) ::kill(pid, SIGKILL);
  }
}

void Track(const std::filesystem::path& pid_file) {
  static const bool registered = [] { return std::atexit(KillAll) == 0; }();
  (void)registered;
  std::lock_guard<std::mutex> lock(g_mutex);
  g_pid_files.push_back(pid_file);
}

int FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof(address);
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
    port = ntohs(address.sin_port);
  }
  ::close(fd);
  return port;
}

std::string Tail(const std::filesystem::path& file) {
  std::ifstream in(file);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return text.size() > 1500 ? text.substr(text.size() - 1500) : text;
}

bool Executable(const std::string& path) { return ::access(path.c_str(), X_OK) == 0; }

}  // namespace

Shell RunShell(const std::string& command) {
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(::popen((command + " 2>&1").c_str(), "r"), ::pclose);
  Shell result;
  std::array<char, 4096> buffer{};
  while (std::fgets(buffer.data(), buffer.size(), pipe.get())) result.output += buffer.data();
  const int status = ::pclose(pipe.release());
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

std::string LocalSlurm::Start(const std::filesystem::path& dir, int cpus, bool& unavailable, int nodes) {
  unavailable = true;
  for (const char* program : {"/usr/sbin/munged", "/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/bin/sbatch",
                              "/usr/bin/sinfo", "/usr/sbin/runuser"}) {
    if (!Executable(program)) return std::string(program) + " is missing (scripts/install-deps installs slurm-wlm and munge)";
  }
  if (::geteuid() != 0) return "the local Slurm cluster needs root (slurmd starts jobs as their users)";
  if (RunShell("id munge").exit_code != 0) return "there is no munge user (is munge installed?)";
  unavailable = false;  // from here on, a failure is the cluster's, and the tests fail
  dir_ = dir;
  std::filesystem::remove_all(dir);
  for (const char* sub : {"state", "spool", "log", "munge"}) std::filesystem::create_directories(dir / sub);
  std::filesystem::permissions(dir, std::filesystem::perms::owner_all | std::filesystem::perms::group_read |
                                        std::filesystem::perms::group_exec | std::filesystem::perms::others_read |
                                        std::filesystem::perms::others_exec);
  const auto munge = dir / "munge";
  const std::string key = (munge / "munge.key").string(), socket = (munge / "munge.socket").string();
  auto sh = RunShell("head -c 1024 /dev/urandom > " + key + " && chmod 600 " + key + " && chown -R munge:munge " +
                     munge.string());
  if (sh.exit_code != 0) return "cannot write the munge key: " + sh.output;
  Track(munge / "munged.pid");
  sh = RunShell("runuser -u munge -- /usr/sbin/munged -f --socket=" + socket + " --key-file=" + key +
                " --pid-file=" + (munge / "munged.pid").string() + " --log-file=" + (munge / "munged.log").string() +
                " --seed-file=" + (munge / "seed").string());
  if (sh.exit_code != 0) return "munged did not start: " + sh.output + Tail(munge / "munged.log");

  // One node named localhost: the ranks of a job find rank 0 at the first name of the node list.
  // Several: n1, n2, ... (Slurm refuses a node named localhost beside others).
  nodes_.clear();
  if (nodes <= 1) nodes_.push_back("localhost");
  for (int n = 1; nodes > 1 && n <= nodes; ++n) nodes_.push_back("n" + std::to_string(n));
  const int controller_port = FreePort();
  std::ofstream conf(dir / "slurm.conf");
  conf << "ClusterName=iisantest\nSlurmctldHost=localhost\nSlurmctldPort=" << controller_port
       << "\nAuthType=auth/munge\nAuthInfo=socket=" << socket
       << "\nCredType=cred/munge\nSlurmUser=root\nSlurmdUser=root\nStateSaveLocation=" << (dir / "state").string()
       << "\nSlurmdSpoolDir=" << (dir / "spool").string() << "/%n\nSlurmctldPidFile="
       << (dir / "slurmctld.pid").string() << "\nSlurmdPidFile=" << (dir / "slurmd-%n.pid").string()
       << "\nSlurmctldLogFile=" << (dir / "log/slurmctld.log").string() << "\nSlurmdLogFile="
       << (dir / "log/slurmd-%n.log").string()
       << "\nProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\nSelectType=select/cons_tres\n"
          "SelectTypeParameters=CR_Core\nMpiDefault=none\nMailProg=/bin/true\nReturnToService=2\n"
          "SchedulerType=sched/backfill\nJobCompType=jobcomp/none\nAccountingStorageType=accounting_storage/none\n"
          "MinJobAge=600\n";
  std::string node_list;
  for (const auto& node : nodes_) {
    std::filesystem::create_directories(dir / "spool" / node);
    conf << "NodeName=" << node << " NodeHostName=localhost Port=" << FreePort() << " CPUs=" << cpus
         << " State=UNKNOWN\n";
    node_list += (node_list.empty() ? "" : ",") + node;
  }
  conf << "PartitionName=debug Nodes=" << node_list << " Default=YES MaxTime=INFINITE State=UP\n";
  conf.close();
  ::setenv("SLURM_CONF", (dir / "slurm.conf").c_str(), 1);

  Track(dir / "slurmctld.pid");
  sh = RunShell("/usr/sbin/slurmctld -i");
  if (sh.exit_code != 0) return "slurmctld did not start: " + sh.output + Tail(dir / "log/slurmctld.log");
  for (const auto& node : nodes_) {
    Track(dir / ("slurmd-" + node + ".pid"));
    sh = RunShell("/usr/sbin/slurmd -N " + node);
    if (sh.exit_code != 0) return "slurmd -N " + node + " did not start: " + sh.output + Tail(dir / ("log/slurmd-" + node + ".log"));
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    const auto states = RunShell("sinfo -h -N -o %t").output;
    if (static_cast<size_t>(std::count(states.begin(), states.end(), '\n')) == nodes_.size() &&
        states.find_first_not_of("idle\n") == std::string::npos) {
      return "";
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return "the nodes did not become idle within 60 s: " + RunShell("sinfo").output + Tail(dir / "log/slurmctld.log") +
         Tail(dir / "log/slurmd.log");
}

void LocalSlurm::Stop() { KillAll(); }

}  // namespace iisan::testing
