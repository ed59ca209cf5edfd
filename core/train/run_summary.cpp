// RunSummary and EpochRecord to and from JSON, with every field checked on the way in.
#include "core/train/run_summary.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string_view>

#include "core/data/json_input.h"

namespace iisan::train {
namespace {

using Json = nlohmann::ordered_json;

enum class FieldType { kString, kInteger, kNumber, kBoolean, kObject };

bool HasType(const Json& value, FieldType type) {
  switch (type) {
    case FieldType::kString: return value.is_string();
    case FieldType::kInteger: return value.is_number_integer();
    case FieldType::kNumber: return value.is_number();
    case FieldType::kBoolean: return value.is_boolean();
    case FieldType::kObject: return value.is_object();
  }
  return false;
}

const char* Describe(FieldType type) {
  switch (type) {
    case FieldType::kString: return "a string";
    case FieldType::kInteger: return "an integer";
    case FieldType::kNumber: return "a number";
    case FieldType::kBoolean: return "true or false";
    case FieldType::kObject: return "an object";
  }
  return "?";
}

// Typed access to one JSON object; every error names the source and the field.
class Fields {
 public:
  Fields(const std::string& source, const Json& json) : source_(source), json_(json) {
    if (!json.is_object()) throw std::runtime_error(source + ": expected a JSON object");
  }

  // The field, or nullptr when it is absent or null. `name` is how messages call it ("test.HR@10").
  const Json* Find(const Json& object, const std::string& key, const std::string& name, FieldType type) const {
    const auto it = object.find(key);
    if (it == object.end() || it->is_null()) return nullptr;
    if (!HasType(*it, type)) Fail(name, std::string("must be ") + Describe(type) + ", found " + it->dump());
    if (type == FieldType::kNumber && !std::isfinite(it->get<double>())) Fail(name, "must be finite");
    return &*it;
  }
  const Json* Find(const std::string& field, FieldType type) const { return Find(json_, field, field, type); }

  const Json& Require(const std::string& field, FieldType type) const {
    const Json* value = Find(field, type);
    if (value == nullptr) Fail(field, std::string("is missing (expected ") + Describe(type) + ")");
    return *value;
  }

  void Expect(bool ok, const std::string& field, const std::string& requirement, double value) const {
    if (!ok) Fail(field, requirement + ", found " + Json(value).dump());
  }

  [[noreturn]] void Fail(const std::string& field, const std::string& problem) const {
    throw std::runtime_error(source_ + ": field \"" + field + "\" " + problem);
  }

  template <typename T>
  void Optional(const std::string& field, FieldType type, T& out) const {
    if (const Json* value = Find(field, type)) out = value->get<T>();
  }

  std::optional<double> Fraction(const Json& object, const std::string& key, const std::string& name) const {
    const Json* value = Find(object, key, name, FieldType::kNumber);
    if (value == nullptr) return std::nullopt;
    const double fraction = value->get<double>();
    Expect(fraction >= 0.0 && fraction <= 1.0, name, "must be a fraction in [0, 1]", fraction);
    return fraction;
  }

  // {"HR@5": .., "NDCG@5": .., ..., "users": n} back into sums.
  RankingMetrics Metrics(const std::string& field) const {
    RankingMetrics metrics(std::vector<int>{});
    const Json* object = Find(field, FieldType::kObject);
    if (object == nullptr) return metrics;
    if (const Json* users = Find(*object, "users", field + ".users", FieldType::kInteger)) {
      metrics.users = users->get<int64_t>();
      Expect(metrics.users >= 0, field + ".users", "must not be negative", static_cast<double>(metrics.users));
    }
    for (auto it = object->begin(); it != object->end(); ++it) {
      if (it.key().rfind("HR@", 0) != 0) continue;
      const std::string k_text = it.key().substr(3);
      int k = 0;
      try {
        size_t used = 0;
        k = std::stoi(k_text, &used);
        if (used != k_text.size() || k < 1) throw std::invalid_argument(k_text);
      } catch (const std::exception&) {
        Fail(field + "." + it.key(), "is not HR@K with a positive integer K");
      }
      const auto hr = Fraction(*object, it.key(), field + "." + it.key());
      const auto ndcg = Fraction(*object, "NDCG@" + k_text, field + ".NDCG@" + k_text);
      const double users = static_cast<double>(metrics.users);
      metrics.ks.push_back(k);
      metrics.hit_sum.push_back(hr.value_or(0.0) * users);
      metrics.ndcg_sum.push_back(ndcg.value_or(0.0) * users);
    }
    return metrics;
  }

 private:
  const std::string& source_;
  const Json& json_;
};

Json Nullable(const std::optional<double>& value) { return value ? Json(*value) : Json(); }

}  // namespace

const char* RunStatusName(RunStatus status) {
  switch (status) {
    case RunStatus::kCompleted: return "completed";
    case RunStatus::kEarlyStopped: return "early_stopped";
    case RunStatus::kStopped: return "stopped";
    case RunStatus::kCancelled: return "cancelled";
  }
  return "completed";
}

RunStatus ParseRunStatus(const std::string& name) {
  for (auto status : {RunStatus::kCompleted, RunStatus::kEarlyStopped, RunStatus::kStopped, RunStatus::kCancelled}) {
    if (name == RunStatusName(status)) return status;
  }
  throw std::runtime_error("unknown run status '" + name + "' (completed, early_stopped, stopped, cancelled)");
}

Json EpochRecord::ToJson() const {
  Json out;
  out["epoch"] = epoch;
  out["train_loss"] = train_loss;
  out["train_steps"] = train_steps;
  out["full_epoch_steps"] = full_epoch_steps;
  out["train_seconds"] = train_seconds;
  out["steady_seconds_per_step"] = steady_seconds_per_step;
  out["eval_seconds"] = eval_seconds;
  out["valid_seconds"] = valid_seconds;
  out["gpu_utilization"] = Nullable(gpu_utilization);
  out["allreduce_bytes_per_step"] = allreduce_bytes_per_step;
  out["allreduce_ms_per_step"] = allreduce_ms_per_step;
  out["valid"] = valid.ToJson();
  if (test) out["test"] = test->ToJson();
  out["best"] = best;
  return out;
}

EpochRecord EpochRecord::FromJson(const Json& json, const std::string& source) {
  const Fields fields(source, json);
  EpochRecord record;
  record.epoch = fields.Require("epoch", FieldType::kInteger).get<int>();
  fields.Expect(record.epoch >= 1, "epoch", "must be at least 1", record.epoch);
  record.train_loss = fields.Require("train_loss", FieldType::kNumber).get<double>();
  fields.Optional("train_steps", FieldType::kInteger, record.train_steps);
  fields.Optional("full_epoch_steps", FieldType::kInteger, record.full_epoch_steps);
  fields.Optional("train_seconds", FieldType::kNumber, record.train_seconds);
  fields.Optional("steady_seconds_per_step", FieldType::kNumber, record.steady_seconds_per_step);
  fields.Optional("eval_seconds", FieldType::kNumber, record.eval_seconds);
  fields.Optional("valid_seconds", FieldType::kNumber, record.valid_seconds);
  record.gpu_utilization = fields.Fraction(json, "gpu_utilization", "gpu_utilization");
  fields.Optional("allreduce_bytes_per_step", FieldType::kInteger, record.allreduce_bytes_per_step);
  fields.Optional("allreduce_ms_per_step", FieldType::kNumber, record.allreduce_ms_per_step);
  fields.Require("valid", FieldType::kObject);
  record.valid = fields.Metrics("valid");
  if (fields.Find("test", FieldType::kObject)) record.test = fields.Metrics("test");
  fields.Optional("best", FieldType::kBoolean, record.best);
  return record;
}

Json RunSummary::ToJson() const {
  Json out;
  out["format_version"] = kFormatVersion;
  out["name"] = name;
  out["method"] = method;
  out["method_label"] = method_label;
  out["modality"] = modality;
  out["device"] = device;
  out["status"] = status;
  out["batch_size"] = batch_size;
  out["best_epoch"] = best_epoch;
  out["epochs_run"] = epochs_run;
  out["valid"] = valid.ToJson();
  out["test"] = test.ToJson();
  out["popularity_test"] = popularity_test.ToJson();
  out["trainable_parameters"] = trainable_parameters;
  out["world_size"] = world_size;
  out["measured_train_seconds_per_epoch"] = measured_train_seconds_per_epoch;
  out["measured_eval_seconds_per_epoch"] = measured_eval_seconds_per_epoch;
  out["train_seconds_per_epoch"] = train_seconds_per_epoch;
  out["train_epoch_extrapolated"] = train_epoch_extrapolated;
  out["train_steps_per_epoch"] = train_steps_per_epoch;
  out["train_steps_measured"] = train_steps_measured;
  out["eval_seconds_per_epoch"] = eval_seconds_per_epoch;
  out["peak_memory_bytes"] = peak_memory_bytes;
  out["peak_memory_gib"] = static_cast<double>(peak_memory_bytes) / (1024.0 * 1024.0 * 1024.0);
  out["peak_memory_kind"] = peak_memory_kind;
  if (!memory_phases.empty()) {
    Json memory = Json::object();
    for (const auto& [phase, bytes] : memory_phases) memory[phase] = bytes;
    out["memory_phases"] = memory;
  }
  out["gpu_utilization"] = Nullable(gpu_utilization);
  out["startup_seconds"] = Nullable(startup_seconds);
  Json phases = Json::object();
  for (const auto& [phase, seconds] : startup_phases) phases[phase] = seconds;
  out["startup_phases"] = phases;
  if (cache_path || cache_fingerprint) {
    out["cache"] = {{"path", cache_path.value_or("")}, {"fingerprint", cache_fingerprint.value_or("")}};
  }
  out["checkpoint"] = checkpoint;
  return out;
}

RunSummary RunSummary::FromJson(const Json& json, const std::string& source) {
  const Fields fields(source, json);
  RunSummary run;
  int version = 1;
  fields.Optional("format_version", FieldType::kInteger, version);
  if (version < 1 || version > kFormatVersion) {
    fields.Fail("format_version", "is " + std::to_string(version) + "; this iisan reads summaries of format 1 to " +
                                      std::to_string(kFormatVersion) + " (written by a newer iisan? use that one)");
  }
  run.method = fields.Require("method", FieldType::kString).get<std::string>();
  run.name = fields.Require("name", FieldType::kString).get<std::string>();
  run.trainable_parameters = fields.Require("trainable_parameters", FieldType::kInteger).get<int64_t>();
  fields.Expect(run.trainable_parameters >= 0, "trainable_parameters", "must not be negative",
                static_cast<double>(run.trainable_parameters));
  run.train_seconds_per_epoch = fields.Require("train_seconds_per_epoch", FieldType::kNumber).get<double>();
  fields.Expect(run.train_seconds_per_epoch > 0.0, "train_seconds_per_epoch", "must be positive",
                run.train_seconds_per_epoch);
  run.eval_seconds_per_epoch = fields.Require("eval_seconds_per_epoch", FieldType::kNumber).get<double>();
  fields.Expect(run.eval_seconds_per_epoch >= 0.0, "eval_seconds_per_epoch", "must not be negative",
                run.eval_seconds_per_epoch);
  const double peak = fields.Require("peak_memory_bytes", FieldType::kNumber).get<double>();
  fields.Expect(peak > 0.0 && peak < 9.2e18, "peak_memory_bytes", "must be positive", peak);
  run.peak_memory_bytes = static_cast<int64_t>(peak);
  run.peak_memory_kind = fields.Require("peak_memory_kind", FieldType::kString).get<std::string>();
  run.device = fields.Require("device", FieldType::kString).get<std::string>();

  fields.Optional("method_label", FieldType::kString, run.method_label);
  fields.Optional("modality", FieldType::kString, run.modality);
  if (const Json* status = fields.Find("status", FieldType::kString)) {
    try {
      run.status = RunStatusName(ParseRunStatus(status->get<std::string>()));
    } catch (const std::runtime_error& error) {
      fields.Fail("status", error.what());
    }
  }
  fields.Optional("batch_size", FieldType::kInteger, run.batch_size);
  fields.Optional("best_epoch", FieldType::kInteger, run.best_epoch);
  fields.Optional("epochs_run", FieldType::kInteger, run.epochs_run);
  run.valid = fields.Metrics("valid");
  run.test = fields.Metrics("test");
  run.popularity_test = fields.Metrics("popularity_test");
  fields.Optional("world_size", FieldType::kInteger, run.world_size);
  fields.Expect(run.world_size >= 1, "world_size", "must be at least 1", run.world_size);
  fields.Optional("measured_train_seconds_per_epoch", FieldType::kNumber, run.measured_train_seconds_per_epoch);
  fields.Optional("measured_eval_seconds_per_epoch", FieldType::kNumber, run.measured_eval_seconds_per_epoch);
  fields.Optional("train_epoch_extrapolated", FieldType::kBoolean, run.train_epoch_extrapolated);
  fields.Optional("train_steps_per_epoch", FieldType::kInteger, run.train_steps_per_epoch);
  fields.Optional("train_steps_measured", FieldType::kInteger, run.train_steps_measured);
  fields.Expect(run.train_steps_per_epoch >= 0, "train_steps_per_epoch", "must not be negative",
                static_cast<double>(run.train_steps_per_epoch));
  fields.Expect(run.train_steps_measured >= 0, "train_steps_measured", "must not be negative",
                static_cast<double>(run.train_steps_measured));
  run.gpu_utilization = fields.Fraction(json, "gpu_utilization", "gpu_utilization");
  if (const Json* startup = fields.Find("startup_seconds", FieldType::kNumber)) {
    run.startup_seconds = startup->get<double>();
    fields.Expect(*run.startup_seconds >= 0.0, "startup_seconds", "must not be negative", *run.startup_seconds);
  }
  if (const Json* memory = fields.Find("memory_phases", FieldType::kObject)) {
    for (const auto& [phase, bytes] : memory->items()) {
      const Json* value = fields.Find(*memory, phase, "memory_phases." + phase, FieldType::kInteger);
      if (!value) continue;
      fields.Expect(value->get<int64_t>() >= 0, "memory_phases." + phase, "must not be negative",
                    static_cast<double>(value->get<int64_t>()));
      run.memory_phases.emplace_back(phase, value->get<int64_t>());
    }
  }
  if (const Json* phases = fields.Find("startup_phases", FieldType::kObject)) {
    for (const auto& [phase, seconds] : phases->items()) {
      const Json* value = fields.Find(*phases, phase, "startup_phases." + phase, FieldType::kNumber);
      if (!value) continue;
      fields.Expect(value->get<double>() >= 0.0, "startup_phases." + phase, "must not be negative", value->get<double>());
      run.startup_phases.emplace_back(phase, value->get<double>());
    }
  }
  if (const Json* cache = fields.Find("cache", FieldType::kObject)) {
    if (const Json* path = fields.Find(*cache, "path", "cache.path", FieldType::kString)) {
      run.cache_path = path->get<std::string>();
    }
    if (const Json* key = fields.Find(*cache, "fingerprint", "cache.fingerprint", FieldType::kString)) {
      run.cache_fingerprint = key->get<std::string>();
    }
  }
  fields.Optional("checkpoint", FieldType::kString, run.checkpoint);
  return run;
}

MetricsFile ReadMetricsFile(const std::filesystem::path& path) {
  // One short line per epoch: 64 MiB is millions of epochs.
  const std::string text = data::ReadBoundedFile(path, size_t{64} << 20);
  MetricsFile out;
  int64_t line = 0;
  for (size_t begin = 0; begin < text.size();) {
    const size_t newline = text.find('\n', begin);
    const bool complete = newline != std::string::npos;
    std::string_view content(text.data() + begin, (complete ? newline : text.size()) - begin);
    begin = complete ? newline + 1 : text.size();
    ++line;
    if (content.ends_with('\r')) content.remove_suffix(1);
    if (content.find_first_not_of(" \t") == std::string_view::npos) continue;
    const std::string source = path.string() + ":" + std::to_string(line);
    try {
      out.records.push_back(EpochRecord::FromJson(data::ParseJsonInput<Json>(content, source, {size_t{1} << 20, 16}),
                                                  source));
    } catch (const std::runtime_error&) {
      // Lines are appended whole and synced (AppendDurably): only the last can be cut short.
      if (complete) throw;
      out.torn_last_line = line;
    }
  }
  return out;
}

RunSummary RunSummary::Read(const std::string& run_dir) {
  const auto file = std::filesystem::path(run_dir) / "summary.json";
  if (!std::filesystem::is_regular_file(file)) {
    throw std::runtime_error(file.string() + ": not found; the run may not have finished (summary.json is "
                             "written at its end), or " + run_dir + " is not a run directory");
  }
  return FromJson(data::ReadJsonFile<Json>(file, {size_t{1} << 20, 16}), file.string());
}

}  // namespace iisan::train
