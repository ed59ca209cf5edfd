#include "launcher/sweep/worker.h"

#include <unistd.h>

#include <condition_variable>
#include <mutex>
#include <thread>

#include <glog/logging.h>

#include "launcher/job.h"
#include "launcher/sweep/line_rpc.h"
#include "launcher/training_run.h"

namespace iisan::launcher::sweep {
namespace {

using Json = nlohmann::ordered_json;

class SchedulerClient {
 public:
  explicit SchedulerClient(const WorkerOptions& options) : options_(options) {}

  // Sends until answered (a restarting scheduler is waited for up to options.reconnect); a reply
  // with "ok": false is an error naming the request.
  Json Call(Json request) {
    if (!options_.token.empty()) request["token"] = options_.token;
    const auto deadline = std::chrono::steady_clock::now() + options_.reconnect;
    auto pause = std::chrono::milliseconds(100);
    for (;;) {
      try {
        auto reply = CallLine(options_.endpoint, request, std::chrono::seconds(30));
        if (!reply.value("ok", false)) {
          throw std::logic_error("the sweep scheduler refused \"" + request.value("op", std::string()) +
                                 "\": " + reply.value("error", std::string("no reason given")));
        }
        return reply;
      } catch (const std::logic_error&) {
        throw;
      } catch (const std::exception& error) {
        if (std::chrono::steady_clock::now() > deadline) {
          throw std::runtime_error(std::string(error.what()) + "; gave up after " +
                                   std::to_string(options_.reconnect.count()) + " s");
        }
        LOG_EVERY_N(WARNING, 10) << error.what() << "; retrying";
        std::this_thread::sleep_for(pause);
        pause = std::min(pause * 2, std::chrono::milliseconds(2000));
      }
    }
  }

 private:
  const WorkerOptions& options_;
};

[[noreturn]] void ExitAbandoned(int trial) {
  LOG(ERROR) << "sweep: trial " << trial << " was handed to another worker (this one missed its heartbeats): "
             << "exiting without writing more";
  google::FlushLogFiles(google::GLOG_INFO);
  std::_Exit(3);
}

}  // namespace

int RunWorker(const WorkerOptions& options_in) {
  WorkerOptions options = options_in;
  if (options.name.empty()) {
    char host[256] = {};
    ::gethostname(host, sizeof(host) - 1);
    options.name = std::string(host) + ":" + std::to_string(::getpid());
  }
  KeepLoadedCaches(true);
  SchedulerClient client(options);
  int trials_run = 0;
  for (;;) {
    if (options.stop && options.stop->load()) return trials_run;
    Json pull;
    pull["op"] = "pull";
    pull["worker"] = options.name;
    const auto reply = client.Call(pull);
    if (reply.value("done", false)) {
      LOG(INFO) << "sweep: done; this worker ran " << trials_run << " trial(s)";
      return trials_run;
    }
    if (!reply.contains("trial")) {
      const double wait = reply.contains("wait") && reply.at("wait").is_number() ? reply.at("wait").get<double>() : 0.5;
      std::this_thread::sleep_for(std::chrono::duration<double>(std::clamp(wait, 0.01, 10.0)));
      continue;
    }
    const auto& trial = reply.at("trial");
    const int id = trial.at("id").get<int>();
    const int attempt = trial.at("attempt").get<int>();
    const double heartbeat_s = std::clamp(trial.value("heartbeat_s", 5.0), 0.2, 30.0);
    ++trials_run;
    Json ident;
    ident["trial"] = id;
    ident["attempt"] = attempt;

    // The trial's own cancel flag: raised by the worker's stop signal or by losing the trial.
    std::atomic<bool> cancel{false};
    std::atomic<bool> abandoned{false};
    std::mutex mutex;
    std::condition_variable wake;
    bool training_done = false;
    std::thread heartbeat([&] {
      std::unique_lock<std::mutex> lock(mutex);
      while (!wake.wait_for(lock, std::chrono::duration<double>(heartbeat_s), [&] { return training_done; })) {
        lock.unlock();
        if (options.stop && options.stop->load()) cancel = true;
        try {
          Json beat = ident;
          beat["op"] = "heartbeat";
          if (client.Call(beat).value("abandon", false)) {
            if (options.exit_on_abandon) ExitAbandoned(id);
            abandoned = true;
            cancel = true;
          }
        } catch (const std::exception& error) {
          LOG(WARNING) << "sweep: heartbeat of trial " << id << ": " << error.what();
        }
        lock.lock();
      }
    });

    Json finish = ident;
    finish["op"] = "finish";
    const auto before = CacheUseCounters();
    try {
      const Config config = ConfigFromJson(trial.at("config"), "trial " + std::to_string(id) + " config");
      TrainingCallbacks callbacks;
      callbacks.cancel = &cancel;
      callbacks.on_epoch = [&](const train::EpochRecord& record) {
        Json report = ident;
        report["op"] = "epoch";
        report["record"] = record.ToJson();
        auto pause = std::chrono::milliseconds(5);
        for (;;) {
          const auto answer = client.Call(report);
          if (answer.value("abandon", false)) {
            if (options.exit_on_abandon) ExitAbandoned(id);
            abandoned = true;
            cancel = true;
            return train::EpochDecision::kStop;
          }
          const auto decision = answer.value("decision", std::string("continue"));
          if (decision == "stop") return train::EpochDecision::kStop;
          if (decision == "continue") return train::EpochDecision::kContinue;
          // "wait": an earlier trial has not reached this epoch yet.
          if (options.stop && options.stop->load()) {
            cancel = true;
            return train::EpochDecision::kContinue;
          }
          std::this_thread::sleep_for(pause);
          pause = std::min(pause * 2, std::chrono::milliseconds(200));
        }
      };
      StartupClock startup;  // the trial's start-up, from here
      const auto outcome = RunTraining(PrepareJob(config, &startup), callbacks, &startup);
      if (outcome.status == train::RunStatus::kCancelled) {
        finish["status"] = "cancelled";
      } else {
        finish["status"] = outcome.status == train::RunStatus::kStopped       ? "stopped"
                           : outcome.status == train::RunStatus::kEarlyStopped ? "early_stopped"
                                                                                : "completed";
        finish["summary"] = outcome.summary.ToJson();
      }
    } catch (const std::exception& error) {
      LOG(ERROR) << "sweep: trial " << id << " failed: " << error.what();
      finish["status"] = "failed";
      finish["error"] = error.what();
    }
    {
      std::lock_guard<std::mutex> lock(mutex);
      training_done = true;
    }
    wake.notify_all();
    heartbeat.join();
    if (abandoned) continue;
    const auto after = CacheUseCounters();
    Json caches;
    caches["built"] = after.built - before.built;
    caches["loaded"] = after.loaded - before.loaded;
    caches["reused"] = after.reused - before.reused;
    finish["caches"] = caches;
    client.Call(finish);
  }
}

}  // namespace iisan::launcher::sweep
