// The engine of `iisan launch --nproc N -- <program> <args>`: N ranks of one program on this
// machine, without MPI. Each child gets LauncherEnvironment(rank, N, rank, "file:<dir>") on
// top of this process's environment, so the TCP backend finds rank 0 through a fresh folder.
// When a rank fails, the others get `grace` to notice (their collectives fail and they exit
// with kCollectiveFailureExitCode); any still running are then terminated, so the launch never
// outlives a failed rank by more than about twice `grace`.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace iisan::distributed {

struct LocalLaunchOptions {
  int nproc = 1;
  std::vector<std::string> command;           // program (searched in PATH) and its arguments
  std::filesystem::path rendezvous_dir;       // empty: a fresh folder in the temp dir, removed afterwards
  std::chrono::milliseconds grace = std::chrono::seconds(10);
};

struct LocalLaunchResult {
  int exit_code = 0;    // 0 if every rank succeeded; else the first failure's (128 + signal if killed)
  std::string message;  // the ranks that failed, in the order they did: "rank 1 exited with code 9; ..."
};

LocalLaunchResult LaunchLocal(const LocalLaunchOptions& options);

// Starts `command` (its program searched in PATH) with exactly `env`; its stdout and stderr are
// appended to `output` when that is given. std::runtime_error "cannot start PROGRAM: reason".
pid_t SpawnProcess(const std::vector<std::string>& command, const std::map<std::string, std::string>& env,
                   const std::filesystem::path& output = {});

}  // namespace iisan::distributed
