// posix_spawn of the ranks, and a wait loop that ends the job once one rank has failed.
#include "distributed/local_launch.h"

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <stdexcept>
#include <thread>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/data/text_file.h"
#include "distributed/rendezvous.h"

namespace iisan::distributed {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

fs::path MakeTempDir() {
  std::string pattern = (fs::temp_directory_path() / "iisan-launch-XXXXXX").string();
  if (!mkdtemp(pattern.data())) throw std::runtime_error("iisan launch: mkdtemp: " + std::string(std::strerror(errno)));
  return pattern;
}

// "exited with code 3" / "was killed by signal 9"; `code` gets the shell's convention.
std::string DescribeStatus(int status, int& code) {
  if (WIFEXITED(status)) {
    code = WEXITSTATUS(status);
    return "exited with code " + std::to_string(code);
  }
  code = 128 + WTERMSIG(status);
  return "was killed by signal " + std::to_string(WTERMSIG(status));
}

}  // namespace

pid_t SpawnProcess(const std::vector<std::string>& command, const Environment& env, const fs::path& output) {
  std::vector<char*> argv;
  for (const auto& arg : command) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);
  std::vector<std::string> entries;
  for (const auto& [name, value] : env) entries.push_back(name + "=" + value);
  std::vector<char*> envp;
  for (auto& entry : entries) envp.push_back(entry.data());
  envp.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (!output.empty()) {
    posix_spawn_file_actions_addopen(&actions, 1, output.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
  }
  pid_t pid = 0;
  const int error = posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  if (error != 0) throw std::runtime_error("cannot start " + command[0] + ": " + std::strerror(error));
  return pid;
}

LocalLaunchResult LaunchLocal(const LocalLaunchOptions& options) {
  if (options.nproc < 1) throw std::invalid_argument("iisan launch: --nproc must be >= 1");
  if (options.command.empty()) throw std::invalid_argument("iisan launch: no command to run");
  const bool own_dir = options.rendezvous_dir.empty();
  const fs::path dir = own_dir ? MakeTempDir() : options.rendezvous_dir;

  std::map<pid_t, int> running;  // pid -> rank
  LocalLaunchResult result;
  std::optional<Clock::time_point> failed_at;
  auto fail = [&](int rank, const std::string& what, int code) {
    if (!failed_at) {
      failed_at = Clock::now();
      result.exit_code = code;
    }
    if (!result.message.empty()) result.message += "; ";
    result.message += "rank " + std::to_string(rank) + " " + what;
  };
  try {
    // One fresh secret for the job's ranks, and loopback only: they all run here.
    const std::string secret = RandomSecret();
    for (int rank = 0; rank < options.nproc; ++rank) {
      auto env = ProcessEnvironment();
      for (auto& [name, value] : LauncherEnvironment(rank, options.nproc, rank, "file:" + dir.string())) {
        env[name] = value;
      }
      env[kEnvJobSecret] = secret;
      env[kEnvLocalJob] = "1";
      running[SpawnProcess(options.command, env)] = rank;
    }
  } catch (const std::exception& e) {
    fail(static_cast<int>(running.size()), e.what(), 1);
  }

  // Polls only our own children, so that no other child of this process is reaped here.
  bool terminated = false;
  while (!running.empty()) {
    for (auto it = running.begin(); it != running.end();) {
      int status = 0;
      if (waitpid(it->first, &status, WNOHANG) != it->first) {
        ++it;
        continue;
      }
      int code = 0;
      const auto what = DescribeStatus(status, code);
      if (code != 0) fail(it->second, what, code);
      it = running.erase(it);
    }
    if (failed_at) {
      const auto elapsed = Clock::now() - *failed_at;
      // First SIGTERM, then SIGKILL: a rank still blocked past the grace period will not exit by itself.
      const int signal = elapsed >= 2 * options.grace ? SIGKILL : elapsed >= options.grace && !terminated ? SIGTERM : 0;
      if (signal) {
        for (const auto& [child, rank] : running) kill(child, signal);
        terminated = true;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (own_dir) {
    try {
      data::RemoveTree(dir);
    } catch (const fs::filesystem_error&) {
      // a leftover temporary folder is not worth failing the job for
    }
  }
  return result;
}

}  // namespace iisan::distributed
