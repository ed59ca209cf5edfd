#include "launcher/sweep/scheduler.h"

#include <sys/stat.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include <glog/logging.h>

#include "cache/service.h"
#include "core/data/atomic_file.h"
#include "core/data/json_input.h"
#include "core/train/run_summary.h"
#include "launcher/sweep/line_rpc.h"

namespace iisan::launcher::sweep {
namespace {

Json Error(const std::string& message) {
  Json reply;
  reply["ok"] = false;
  reply["error"] = message;
  return reply;
}

Json Ok() {
  Json reply;
  reply["ok"] = true;
  return reply;
}

// An integer field within [low, high], or an error message.
std::optional<int64_t> IntField(const Json& request, const char* field, int64_t low, int64_t high, std::string& error) {
  if (!request.contains(field) || !request.at(field).is_number_integer()) {
    error = std::string("\"") + field + "\" must be an integer";
    return std::nullopt;
  }
  const auto value = request.at(field).get<int64_t>();
  if (value < low || value > high) {
    error = std::string("\"") + field + "\" is outside [" + std::to_string(low) + ", " + std::to_string(high) + "]";
    return std::nullopt;
  }
  return value;
}

std::string TrialName(int id) {
  char name[32];
  std::snprintf(name, sizeof(name), "trial-%04d", id);
  return name;
}

std::string Duration(double seconds) {
  const auto s = static_cast<int64_t>(std::llround(std::max(0.0, seconds)));
  std::ostringstream out;
  if (s >= 3600) out << s / 3600 << "h" << (s % 3600) / 60 << "m";
  else if (s >= 60) out << s / 60 << "m" << s % 60 << "s";
  else out << s << "s";
  return out.str();
}

}  // namespace

double NowSeconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string SweepProgress::Line(const std::string& metric) const {
  std::ostringstream out;
  const int done = completed + early_stopped + pruned + failed;
  out << done << "/" << total << " trials done (" << pruned << " pruned, " << early_stopped << " early-stopped, "
      << failed << " failed), " << running << " running";
  if (best) out << "; best " << metric << " " << *best << " (trial " << best_trial << ")";
  if (elapsed_seconds > 0 && done > 0) out << "; " << (3600.0 * done / elapsed_seconds) << " trials/h";
  if (eta_seconds) out << "; ETA " << Duration(*eta_seconds);
  return out.str();
}

Json SweepProgress::ToJson() const {
  Json out;
  out["total"] = total;
  out["created"] = created;
  out["pending"] = pending;
  out["running"] = running;
  out["completed"] = completed;
  out["early_stopped"] = early_stopped;
  out["pruned"] = pruned;
  out["failed"] = failed;
  out["best"] = best ? Json(*best) : Json();
  out["best_trial"] = best_trial;
  out["elapsed_seconds"] = elapsed_seconds;
  out["eta_seconds"] = eta_seconds ? Json(*eta_seconds) : Json();
  out["caches_built"] = caches_built;
  out["caches_loaded"] = caches_loaded;
  out["caches_reused"] = caches_reused;
  out["retries"] = retries;
  return out;
}

SweepState::SweepState(SweepSpec spec, std::filesystem::path sweep_dir, std::filesystem::path db_file)
    : spec_(std::move(spec)), dir_(std::move(sweep_dir)) {
  std::filesystem::create_directories(dir_ / "trials");
  if (db_file.empty()) db_file = dir_ / "sweep.db";
  store_ = std::make_unique<SweepStore>(db_file);
  searcher_ = MakeSearcher(spec_);
  const Config base = ConfigFromJson(spec_.base, "sweep base");
  max_epochs_ = spec_.early_stopping.max_epochs > 0 ? spec_.early_stopping.max_epochs : base.train.epochs;

  const std::string wanted = spec_.ToJson().dump();
  const double now = NowSeconds();
  if (const auto stored = store_->Meta("spec")) {
    if (*stored != wanted) {
      const auto a = data::ParseJsonInput<Json>(*stored, db_file.string() + " spec").flatten();
      const auto b = spec_.ToJson().flatten();
      std::string field = "?";
      for (const auto& [pointer, value] : b.items()) {
        if (!a.contains(pointer) || a[pointer] != value) {
          field = pointer;
          break;
        }
      }
      if (field == "?") {
        for (const auto& [pointer, value] : a.items()) {
          if (!b.contains(pointer)) {
            field = pointer;
            break;
          }
        }
      }
      throw ConfigError(dir_.string() + " holds a sweep with another spec (" + field +
                        " differs): resume it with the same spec, or give another --dir");
    }
    started_ = store_->Started(now);
    LOG(INFO) << "resuming the sweep in " << dir_.string();
  } else {
    store_->SetMeta("spec", wanted);
    store_->SetMeta("started", std::to_string(now));
    started_ = now;
  }
  for (auto& row : store_->Trials()) {
    // Workers get a heartbeat's grace to reach a restarted scheduler before their trials are retried.
    if (row.status == TrialStatus::kRunning) {
      row.heartbeat = now;
      attempt_started_[row.id] = now;
    }
    progress_[row.id].ended = IsTerminal(row.status);
    trials_[row.id] = std::move(row);
  }
  for (const auto& epoch : store_->Epochs()) {
    auto& progress = progress_[epoch.trial];
    if (epoch.metric) progress.metric[epoch.epoch] = *epoch.metric;
    progress.last_epoch = std::max(progress.last_epoch, epoch.epoch);
    if (epoch.decision == "continue" || epoch.decision == "stop") decisions_[{epoch.trial, epoch.epoch}] = epoch.decision;
  }
  if (const auto counts = store_->Meta("caches")) {
    const auto json = data::ParseJsonInput<Json>(*counts, db_file.string() + " caches");
    caches_built_ = json.value("built", 0);
    caches_loaded_ = json.value("loaded", 0);
    caches_reused_ = json.value("reused", 0);
    retries_ = json.value("retries", 0);
  }
}

void SweepState::Save(const TrialRow& row) { store_->PutTrial(row); }

Json SweepState::Handle(const Json& request, double now) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!request.is_object() || !request.contains("op") || !request.at("op").is_string()) {
    return Error("a request is a JSON object with \"op\" (pull, heartbeat, epoch, finish, status)");
  }
  const auto op = request.at("op").get<std::string>();
  try {
    if (op == "pull") return Pull(request, now);
    if (op == "heartbeat") return Heartbeat(request, now);
    if (op == "epoch") return Epoch(request, now);
    if (op == "finish") return Finish(request, now);
    if (op == "status") {
      Json reply = Ok();
      reply["progress"] = ProgressLocked(now).ToJson();
      return reply;
    }
  } catch (const std::exception& error) {
    // A failure inside a write-through (disk full, a damaged database) changes nothing in memory
    // that the store did not take: the request is refused and may be sent again.
    LOG(ERROR) << "sweep: request \"" << op << "\" failed: " << error.what();
    return Error(std::string("the scheduler could not record this request: ") + error.what());
  }
  return Error("unknown op \"" + op.substr(0, 32) + "\" (pull, heartbeat, epoch, finish, status)");
}

Json SweepState::Pull(const Json& request, double now) {
  if (!request.contains("worker") || !request.at("worker").is_string() || request.at("worker").get<std::string>().size() > 256) {
    return Error("\"worker\" must be a string of at most 256 bytes");
  }
  const auto worker = request.at("worker").get<std::string>();
  // Leases are checked here too, so that a sweep makes progress on pulls alone.
  ExpireLocked(now);
  int running = 0;
  for (const auto& [id, row] : trials_) running += row.status == TrialStatus::kRunning;
  Json reply = Ok();
  if (running >= spec_.concurrency) {
    reply["wait"] = 0.5;
    return reply;
  }
  TrialRow* next = nullptr;
  for (auto& [id, row] : trials_) {
    if (row.status == TrialStatus::kPending) {
      next = &row;
      break;
    }
  }
  if (!next) {
    const int index = static_cast<int>(trials_.size());
    std::vector<Observation> finished;
    for (const auto& [id, row] : trials_) {
      if (IsTerminal(row.status)) finished.push_back({id, row.params, row.best});
    }
    if (const auto params = searcher_->Suggest(index, finished)) {
      TrialRow row;
      row.id = index;
      row.params = *params;
      row.run_dir = (dir_ / "trials" / TrialName(index)).string();
      // A combination the schema refuses (e.g. a conditional value out of range) fails now.
      TrialConfig(spec_, row.params, "sweep trial " + std::to_string(index));
      Save(row);
      trials_[index] = row;
      progress_[index];
      next = &trials_[index];
    }
  }
  if (!next) {
    if (running > 0) {
      reply["wait"] = 0.5;  // a running trial may still need a retry
    } else {
      reply["done"] = true;
    }
    return reply;
  }
  TrialRow updated = *next;
  updated.status = TrialStatus::kRunning;
  updated.attempts += 1;
  updated.worker = worker;
  updated.heartbeat = now;
  if (updated.attempts == 1) updated.started = now;
  Save(updated);
  *next = updated;
  attempt_started_[updated.id] = now;

  Config config = TrialConfig(spec_, updated.params, "sweep trial " + std::to_string(updated.id));
  config.name = TrialName(updated.id);
  config.run_root = (dir_ / "trials").string();
  config.train.resume = "auto";
  Json trial;
  trial["id"] = updated.id;
  trial["attempt"] = updated.attempts;
  trial["config"] = ConfigToJson(config, /*redact_secrets=*/false);
  trial["run_dir"] = updated.run_dir;
  trial["max_epochs"] = max_epochs_;
  trial["heartbeat_s"] = spec_.heartbeat_timeout_s / 4;
  reply["trial"] = trial;
  LOG(INFO) << "sweep: trial " << updated.id << " (attempt " << updated.attempts << ") to " << worker << ": "
            << updated.params.dump();
  return reply;
}

TrialRow* SweepState::Current(const Json& request, Json& reply) {
  std::string error;
  const auto trial = IntField(request, "trial", 0, 100000000, error);
  const auto attempt = trial ? IntField(request, "attempt", 1, 1000000, error) : std::nullopt;
  if (!trial || !attempt) {
    reply = Error(error);
    return nullptr;
  }
  auto it = trials_.find(static_cast<int>(*trial));
  if (it == trials_.end()) {
    reply = Error("no trial " + std::to_string(*trial) + " in this sweep");
    return nullptr;
  }
  if (it->second.status != TrialStatus::kRunning || it->second.attempts != *attempt) {
    reply = Ok();
    reply["abandon"] = true;
    return nullptr;
  }
  return &it->second;
}

Json SweepState::Heartbeat(const Json& request, double now) {
  Json reply;
  TrialRow* row = Current(request, reply);
  if (!row) return reply;
  row->heartbeat = now;  // in memory only: a restarted scheduler grants a fresh lease anyway
  return Ok();
}

Json SweepState::Epoch(const Json& request, double now) {
  Json reply;
  TrialRow* row = Current(request, reply);
  if (!row) return reply;
  if (!request.contains("record") || !request.at("record").is_object()) return Error("\"record\" must be an object");
  const Json& record_json = request.at("record");
  train::EpochRecord record;
  try {
    record = train::EpochRecord::FromJson(record_json, "epoch record");
  } catch (const std::exception& error) {
    return Error(error.what());
  }
  if (record.epoch < 1 || record.epoch > max_epochs_) {
    return Error("epoch " + std::to_string(record.epoch) + " is outside [1, " + std::to_string(max_epochs_) + "]");
  }
  row->heartbeat = now;
  const int epoch = record.epoch;
  const auto metric = MetricOf(record_json, spec_.metric);
  auto& progress = progress_[row->id];
  // Tentatively add the epoch (rolled back below if the store refuses it).
  const auto saved_progress = progress;
  if (metric) progress.metric[epoch] = *metric;
  progress.last_epoch = std::max(progress.last_epoch, epoch);

  Decision decision;
  const auto known = decisions_.find({row->id, epoch});
  if (known != decisions_.end()) {
    decision = known->second == "stop" ? Decision::kStop : Decision::kContinue;
  } else {
    decision = Decide(spec_, max_epochs_, row->id, epoch, progress_);
  }
  TrialRow updated = *row;
  updated.epochs = std::max(updated.epochs, epoch);
  if (metric) {
    const bool better = !updated.best || (spec_.maximize ? *metric > *updated.best : *metric < *updated.best);
    if (better) {
      updated.best = metric;
      updated.best_epoch = epoch;
    }
  }
  try {
    store_->Begin();
    store_->PutEpoch({row->id, epoch, metric, record_json, decision == Decision::kWait ? "" : DecisionName(decision)});
    store_->PutTrial(updated);
    store_->Commit();
  } catch (...) {
    try {
      store_->Rollback();
    } catch (...) {
    }
    progress = saved_progress;
    throw;
  }
  *row = updated;
  if (decision != Decision::kWait) decisions_[{row->id, epoch}] = DecisionName(decision);
  if (decision == Decision::kStop) {
    LOG(INFO) << "sweep: trial " << row->id << " pruned after epoch " << epoch << " (" << spec_.metric << " "
              << (metric ? std::to_string(*metric) : "not finite") << ")";
  }
  reply = Ok();
  reply["decision"] = DecisionName(decision);
  return reply;
}

Json SweepState::Finish(const Json& request, double now) {
  Json reply;
  TrialRow* row = Current(request, reply);
  if (!row) return reply;
  if (!request.contains("status") || !request.at("status").is_string()) return Error("\"status\" must be a string");
  const auto status = request.at("status").get<std::string>();
  TrialRow updated = *row;
  if (status == "completed") updated.status = TrialStatus::kCompleted;
  else if (status == "early_stopped") updated.status = TrialStatus::kEarlyStopped;
  else if (status == "stopped") updated.status = TrialStatus::kPruned;
  else if (status == "failed") updated.status = TrialStatus::kFailed;
  else if (status == "cancelled") updated.status = TrialStatus::kPending;
  else return Error("\"status\" must be completed, early_stopped, stopped, failed or cancelled");
  if (request.contains("error")) {
    if (!request.at("error").is_string()) return Error("\"error\" must be a string");
    updated.error = request.at("error").get<std::string>().substr(0, 4000);
  }
  if (request.contains("summary") && !request.at("summary").is_null()) {
    if (!request.at("summary").is_object()) return Error("\"summary\" must be an object");
    try {
      train::RunSummary::FromJson(request.at("summary"), "summary");
    } catch (const std::exception& error) {
      return Error(error.what());
    }
    updated.summary = request.at("summary");
  }
  int built = 0, loaded = 0, reused = 0;
  if (request.contains("caches")) {
    const auto& caches = request.at("caches");
    std::string error;
    if (!caches.is_object()) return Error("\"caches\" must be an object");
    const auto b = IntField(caches, "built", 0, 1000000, error);
    const auto l = b ? IntField(caches, "loaded", 0, 1000000, error) : std::nullopt;
    const auto r = l ? IntField(caches, "reused", 0, 1000000, error) : std::nullopt;
    if (!r) return Error("caches: " + error);
    built = static_cast<int>(*b);
    loaded = static_cast<int>(*l);
    reused = static_cast<int>(*r);
  }
  updated.seconds += std::max(0.0, now - attempt_started_[row->id]);
  if (updated.status == TrialStatus::kPending && updated.attempts >= spec_.max_attempts) {
    updated.status = TrialStatus::kFailed;
    updated.error = "cancelled on its last attempt (" + std::to_string(updated.attempts) + " of max_attempts)";
  }
  updated.finished = IsTerminal(updated.status) ? now : 0;
  Json counts;
  counts["built"] = caches_built_ + built;
  counts["loaded"] = caches_loaded_ + loaded;
  counts["reused"] = caches_reused_ + reused;
  counts["retries"] = retries_ + (updated.status == TrialStatus::kPending);
  store_->Begin();
  try {
    store_->PutTrial(updated);
    store_->SetMeta("caches", counts.dump());
    store_->Commit();
  } catch (...) {
    try {
      store_->Rollback();
    } catch (...) {
    }
    throw;
  }
  caches_built_ += built;
  caches_loaded_ += loaded;
  caches_reused_ += reused;
  retries_ += updated.status == TrialStatus::kPending;
  *row = updated;
  progress_[row->id].ended = IsTerminal(updated.status);
  LOG(INFO) << "sweep: trial " << row->id << " " << TrialStatusName(updated.status)
            << (updated.best ? ", best " + spec_.metric + " " + std::to_string(*updated.best) : std::string())
            << (updated.error.empty() ? std::string() : ": " + updated.error);
  try {
    ExportJsonl(*store_, dir_ / "trials.jsonl");
  } catch (const std::exception& error) {
    LOG(WARNING) << "sweep: trials.jsonl not written: " << error.what();
  }
  return Ok();
}

void SweepState::ExpireLeases(double now) {
  std::lock_guard<std::mutex> lock(mutex_);
  ExpireLocked(now);
}

void SweepState::ExpireLocked(double now) {
  for (auto& [id, row] : trials_) {
    if (row.status != TrialStatus::kRunning || now - row.heartbeat <= spec_.heartbeat_timeout_s) continue;
    TrialRow updated = row;
    updated.seconds += std::max(0.0, row.heartbeat - attempt_started_[id]);
    if (updated.attempts < spec_.max_attempts) {
      updated.status = TrialStatus::kPending;
      LOG(WARNING) << "sweep: trial " << id << " lost its worker " << row.worker << " (no heartbeat for "
                   << now - row.heartbeat << " s): retried from its last checkpoint";
    } else {
      updated.status = TrialStatus::kFailed;
      updated.error = "its worker stopped answering on each of " + std::to_string(updated.attempts) + " attempts";
      updated.finished = now;
      LOG(WARNING) << "sweep: trial " << id << " failed: " << updated.error;
    }
    Save(updated);
    row = updated;
    progress_[id].ended = IsTerminal(updated.status);
    retries_ += updated.status == TrialStatus::kPending;
  }
}

bool SweepState::Done() const {
  std::lock_guard<std::mutex> lock(mutex_);
  if (static_cast<int>(trials_.size()) < searcher_->Budget()) return false;
  for (const auto& [id, row] : trials_) {
    if (!IsTerminal(row.status)) return false;
  }
  return true;
}

SweepProgress SweepState::Progress(double now) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return ProgressLocked(now);
}

SweepProgress SweepState::ProgressLocked(double now) const {
  SweepProgress out;
  out.total = searcher_->Budget();
  out.created = static_cast<int>(trials_.size());
  out.pending = out.total - out.created;
  for (const auto& [id, row] : trials_) {
    switch (row.status) {
      case TrialStatus::kPending: ++out.pending; break;
      case TrialStatus::kRunning: ++out.running; break;
      case TrialStatus::kCompleted: ++out.completed; break;
      case TrialStatus::kEarlyStopped: ++out.early_stopped; break;
      case TrialStatus::kPruned: ++out.pruned; break;
      case TrialStatus::kFailed: ++out.failed; break;
    }
    if (row.best && (!out.best || (spec_.maximize ? *row.best > *out.best : *row.best < *out.best))) {
      out.best = row.best;
      out.best_trial = id;
    }
  }
  out.elapsed_seconds = now - started_;
  const int done = out.completed + out.early_stopped + out.pruned + out.failed;
  if (done > 0 && done < out.total) out.eta_seconds = out.elapsed_seconds / done * (out.total - done);
  out.caches_built = caches_built_;
  out.caches_loaded = caches_loaded_;
  out.caches_reused = caches_reused_;
  out.retries = retries_;
  return out;
}

void SweepState::Export() const {
  std::lock_guard<std::mutex> lock(mutex_);
  ExportJsonl(*store_, dir_ / "trials.jsonl");
}

struct SchedulerServer::Impl {
  std::unique_ptr<LineServer> server;
  std::filesystem::path dir;
};

SchedulerServer::SchedulerServer(SweepState& state, const SchedulerOptions& options) : impl_(std::make_unique<Impl>()) {
  impl_->dir = state.dir();
  LineServerOptions line;
  line.listen = options.listen;
  line.unix_path = (state.dir() / "scheduler.sock").string();
  if (!options.listen.empty() && options.token.empty()) {
    throw ConfigError("sweep: --listen needs a token (a TCP scheduler takes requests from anyone who can reach it)");
  }
  const std::string token = options.listen.empty() ? std::string() : options.token;
  impl_->server = std::make_unique<LineServer>(line, [&state, token](const Json* request, const std::string& parse_error) {
    if (!request) return Error("malformed request: " + parse_error.substr(0, 200));
    if (!token.empty()) {
      const bool carried = request->is_object() && request->contains("token") && request->at("token").is_string();
      if (!carried || !cache::SameToken(request->at("token").get<std::string>(), token)) {
        LOG(WARNING) << "sweep: a request without the right token was refused";
        return Error("this scheduler needs its token (SWEEP_DIR/token)");
      }
    }
    return state.Handle(*request, NowSeconds());
  });
  Json found;
  found["endpoint"] = impl_->server->endpoint();
  if (!token.empty()) {
    const auto token_file = state.dir() / "token";
    // Created 0600 from the start (the temporary file too): no moment when others can read it.
    const auto old_mask = ::umask(0177);
    try {
      data::WriteFileAtomically(token_file, token);
    } catch (...) {
      ::umask(old_mask);
      throw;
    }
    ::umask(old_mask);
    found["token_file"] = token_file.string();
  }
  data::WriteFileAtomically(state.dir() / "scheduler.json", found.dump(2) + "\n");
}

SchedulerServer::~SchedulerServer() = default;
std::string SchedulerServer::endpoint() const { return impl_->server->endpoint(); }
void SchedulerServer::Run() { impl_->server->Run(); }
void SchedulerServer::Stop() { impl_->server->Stop(); }

std::pair<std::string, std::string> FindScheduler(const std::filesystem::path& sweep_dir) {
  const auto file = sweep_dir / "scheduler.json";
  const auto json = data::ReadJsonFile<Json>(file, {1 << 16, 8});
  if (!json.is_object() || !json.contains("endpoint") || !json.at("endpoint").is_string()) {
    throw std::runtime_error(file.string() + ": no \"endpoint\" (is `iisan sweep run` running for this sweep?)");
  }
  std::string token;
  if (json.contains("token_file")) {
    if (!json.at("token_file").is_string()) throw std::runtime_error(file.string() + ": \"token_file\" must be a string");
    const auto token_file = json.at("token_file").get<std::string>();
    std::ifstream in(token_file);
    if (!in) throw std::runtime_error(token_file + ": cannot read the scheduler's token");
    token.resize(4097);
    in.read(token.data(), static_cast<std::streamsize>(token.size()));
    token.resize(static_cast<size_t>(in.gcount()));
    if (token.size() > 4096) throw std::runtime_error(token_file + ": longer than 4096 bytes; not a scheduler token");
  }
  return {json.at("endpoint").get<std::string>(), token};
}

}  // namespace iisan::launcher::sweep
