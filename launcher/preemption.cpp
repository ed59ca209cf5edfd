// Signal flag, Slurm time-left query and requeue.
#include "launcher/preemption.h"

#include <cctype>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include <glog/logging.h>

namespace iisan::launcher {
namespace {

std::atomic<bool> g_cancel{false};
std::atomic<int> g_signal{0};
std::atomic<bool> g_installed{false};
struct sigaction g_previous_usr2, g_previous_term;

extern "C" void RaiseCancelFlag(int signal) {
  int expected = 0;
  g_signal.compare_exchange_strong(expected, signal);
  g_cancel.store(true);
}

std::string Get(const std::map<std::string, std::string>& env, const std::string& key) {
  const auto it = env.find(key);
  return it == env.end() ? std::string() : it->second;
}

// Runs a command (a fixed argument list, no shell) with a timeout and returns its stdout.
std::string Capture(const std::string& command) {
  std::string out;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) return out;
  char buffer[256];
  while (size_t n = std::fread(buffer, 1, sizeof(buffer), pipe)) {
    out.append(buffer, n);
    if (out.size() > 4096) break;
  }
  ::pclose(pipe);
  return out;
}

bool IsJobId(const std::string& text) {
  if (text.empty() || text.size() > 40) return false;
  for (char c : text) {
    if (!(std::isdigit(static_cast<unsigned char>(c)) || c == '_')) return false;
  }
  return true;
}

// squeue's %L: "MM:SS", "HH:MM:SS", "D-HH:MM:SS", "UNLIMITED", "INVALID", "NOT_SET".
long ParseTimeLeft(std::string text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
  long days = 0;
  const auto dash = text.find('-');
  try {
    if (dash != std::string::npos) {
      days = std::stol(text.substr(0, dash));
      text = text.substr(dash + 1);
    }
    long parts[3] = {0, 0, 0};
    int count = 0;
    size_t start = 0;
    while (count < 3) {
      const auto colon = text.find(':', start);
      parts[count++] = std::stol(text.substr(start, colon - start));
      if (colon == std::string::npos) break;
      start = colon + 1;
    }
    if (count == 2) return days * 86400 + parts[0] * 60 + parts[1];
    if (count == 3) return days * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2];
  } catch (const std::exception&) {
  }
  return -1;
}

}  // namespace

CancelOnSignals::CancelOnSignals() {
  if (g_installed.exchange(true)) throw std::logic_error("CancelOnSignals: already installed in this process");
  g_cancel.store(false);
  g_signal.store(0);
  struct sigaction action {};
  action.sa_handler = RaiseCancelFlag;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGUSR2, &action, &g_previous_usr2);
  sigaction(SIGTERM, &action, &g_previous_term);
}

CancelOnSignals::~CancelOnSignals() {
  sigaction(SIGUSR2, &g_previous_usr2, nullptr);
  sigaction(SIGTERM, &g_previous_term, nullptr);
  g_installed.store(false);
}

const std::atomic<bool>* CancelOnSignals::flag() const { return &g_cancel; }
int CancelOnSignals::signal() const { return g_signal.load(); }

std::string DescribeStop(int signal, long time_left_seconds) {
  std::string name = signal == SIGUSR2 ? "SIGUSR2" : signal == SIGTERM ? "SIGTERM" : "signal " + std::to_string(signal);
  if (time_left_seconds < 0) return name + " (time left unknown): preemption, scancel or the time limit";
  const std::string left = std::to_string(time_left_seconds / 60) + ":" +
                           (time_left_seconds % 60 < 10 ? "0" : "") + std::to_string(time_left_seconds % 60);
  // The templates ask for the signal 120 s before the limit; allow for the scheduler's tick.
  if (time_left_seconds <= 300) return name + " with " + left + " of the time limit left: the time limit is near";
  return name + " with " + left + " of the time limit left: preemption or scancel, not the time limit";
}

long SlurmTimeLeftSeconds(const std::map<std::string, std::string>& env) {
  const auto job = Get(env, "SLURM_JOB_ID");
  if (!IsJobId(job)) return -1;
  return ParseTimeLeft(Capture("timeout 10 squeue -h -j " + job + " -o %L 2>/dev/null"));
}

RequeueDecision DecideRequeue(const std::map<std::string, std::string>& env, int max_requeues) {
  RequeueDecision decision;
  const auto job = Get(env, "SLURM_JOB_ID");
  if (job.empty()) {
    decision.reason = "not a Slurm job (no SLURM_JOB_ID): not requeued";
    return decision;
  }
  const auto array_job = Get(env, "SLURM_ARRAY_JOB_ID"), array_task = Get(env, "SLURM_ARRAY_TASK_ID");
  decision.job = !array_job.empty() && !array_task.empty() ? array_job + "_" + array_task : job;
  if (!IsJobId(decision.job)) {
    decision.reason = "the Slurm job id '" + decision.job + "' is not a job id: not requeued";
    return decision;
  }
  long restarts = 0;
  try {
    const auto text = Get(env, "SLURM_RESTART_COUNT");
    restarts = text.empty() ? 0 : std::stol(text);
  } catch (const std::exception&) {
    restarts = 0;
  }
  if (restarts >= max_requeues) {
    decision.reason = "job " + decision.job + " was requeued " + std::to_string(restarts) +
                      " times already (train.max_requeues = " + std::to_string(max_requeues) +
                      "): not requeued; resubmit it to continue";
    return decision;
  }
  decision.requeue = true;
  decision.reason = "requeueing job " + decision.job + " (requeue " + std::to_string(restarts + 1) + " of at most " +
                    std::to_string(max_requeues) + ")";
  return decision;
}

bool RequeueJob(const std::string& job) {
  if (!IsJobId(job)) return false;
  const int status = std::system(("timeout 30 scontrol requeue " + job + " > /dev/null 2>&1").c_str());
  if (status != 0) {
    LOG(ERROR) << "scontrol requeue " << job << " failed (status " << status << "); the checkpoint is kept: resubmit "
               << "the job with train.resume=auto to continue";
    return false;
  }
  return true;
}

}  // namespace iisan::launcher
