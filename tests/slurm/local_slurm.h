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
  // the cluster is up; else why not, with `unavailable` true when this machine cannot run one
  // (programs missing, not root: the tests skip) and false when a daemon failed (the tests fail;
  // the message has the tail of its log). Sets SLURM_CONF for this process and its jobs.
  // One node, "localhost"; or, with `nodes` > 1, nodes n1, n2, ... : as many slurmd's on this
  // machine (Debian's Slurm allows several), all at 127.0.0.1 on their own ports. Their names
  // do not resolve, so multi-node jobs give the ranks rank 0's address (IISAN_RENDEZVOUS).
  std::string Start(const std::filesystem::path& dir, int cpus, bool& unavailable, int nodes = 1);
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
