// A real one-node Slurm cluster for tests: munged (as the munge user), slurmctld and slurmd
// started on this machine with a configuration in a temporary folder, waited for until sinfo
// shows the node idle, and stopped by their pids at the end, also when a test fails or the
// process exits early. Needs root (slurmd starts jobs as their users) and Debian's slurm-wlm
// and munge; otherwise Start() says why not and the tests skip.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace iisan::testing {

class LocalSlurm {
 public:
  // Starts the daemons with state, logs and config under `dir` (created fresh). Returns "" when
  // the cluster is up, else why it is not (missing programs, not root, a daemon that failed:
  // with the tail of its log). Sets SLURM_CONF for this process and the jobs it submits.
  // Two nodes where this machine's hostname resolves (node "localhost" and node <hostname>, two
  // slurmd's on one machine; Debian's Slurm allows several), else one.
  std::string Start(const std::filesystem::path& dir, int cpus);
  // The nodes, in slurm.conf order.
  const std::vector<std::string>& nodes() const { return nodes_; }
  // SIGTERM, then SIGKILL after 5 s, to every daemon started, by pid. Idempotent.
  void Stop();
  ~LocalSlurm() { Stop(); }

  const std::filesystem::path& dir() const { return dir_; }

 private:
  std::filesystem::path dir_;
  std::vector<std::string> nodes_;
};

// Runs a shell command; its exit status and combined output.
struct Shell {
  int exit_code = -1;
  std::string output;
};
Shell RunShell(const std::string& command);

}  // namespace iisan::testing
