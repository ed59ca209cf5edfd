#include "launcher/sweep/sweep_spec.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <set>

#include "core/data/json_input.h"

namespace iisan::launcher::sweep {
namespace {

const char* KindName(DimensionKind kind) {
  switch (kind) {
    case DimensionKind::kGrid: return "grid";
    case DimensionKind::kChoice: return "choice";
    case DimensionKind::kUniform: return "uniform";
    case DimensionKind::kLogUniform: return "loguniform";
    case DimensionKind::kInt: return "int";
  }
  return "?";
}

[[noreturn]] void Fail(const std::string& source, const std::string& field, const std::string& what) {
  throw ConfigError(source + ": " + field + ": " + what);
}

// Reads "field" of `object` as a T, or leaves `out` as it is when absent.
template <typename T>
void Optional(const Json& object, const char* field, T& out, const std::string& source) {
  if (!object.contains(field)) return;
  try {
    out = object.at(field).get<T>();
  } catch (const std::exception&) {
    Fail(source, field, "has the wrong type (" + std::string(object.at(field).type_name()) + ")");
  }
}

int BoundedInt(const Json& object, const char* field, int fallback, int low, int high, const std::string& source) {
  if (!object.contains(field)) return fallback;
  const auto& value = object.at(field);
  if (!value.is_number_integer()) Fail(source, field, "must be an integer");
  const auto number = value.get<int64_t>();
  if (number < low || number > high) {
    Fail(source, field, std::to_string(number) + " is outside [" + std::to_string(low) + ", " + std::to_string(high) + "]");
  }
  return static_cast<int>(number);
}

Dimension ParseDimension(const std::string& key, const Json& entry, const std::string& source) {
  const std::string field = "space." + key;
  if (!entry.is_object()) Fail(source, field, "must be an object such as {\"choice\": [1, 2]}");
  Dimension dim;
  dim.key = key;
  int kinds = 0;
  for (const auto& [name, value] : entry.items()) {
    if (name == "when") continue;
    DimensionKind kind;
    if (name == "grid") kind = DimensionKind::kGrid;
    else if (name == "choice") kind = DimensionKind::kChoice;
    else if (name == "uniform") kind = DimensionKind::kUniform;
    else if (name == "loguniform") kind = DimensionKind::kLogUniform;
    else if (name == "int") kind = DimensionKind::kInt;
    else Fail(source, field, "unknown entry \"" + name + "\" (grid, choice, uniform, loguniform, int, when)");
    ++kinds;
    dim.kind = kind;
    if (!value.is_array() || value.empty()) Fail(source, field + "." + name, "must be a non-empty list");
    if (kind == DimensionKind::kGrid || kind == DimensionKind::kChoice) {
      if (value.size() > 10000) Fail(source, field + "." + name, "more than 10000 values");
      dim.values.assign(value.begin(), value.end());
      continue;
    }
    if (value.size() != 2 || !value[0].is_number() || !value[1].is_number()) {
      Fail(source, field + "." + name, "must be [low, high]");
    }
    dim.low = value[0].get<double>();
    dim.high = value[1].get<double>();
    if (!std::isfinite(dim.low) || !std::isfinite(dim.high) || dim.low > dim.high) {
      Fail(source, field + "." + name, "needs finite low <= high");
    }
    if (kind == DimensionKind::kLogUniform && dim.low <= 0) Fail(source, field + ".loguniform", "needs low > 0");
    if (kind == DimensionKind::kInt) {
      if (!value[0].is_number_integer() || !value[1].is_number_integer()) Fail(source, field + ".int", "needs integers");
      if (std::fabs(dim.low) > 9e15 || std::fabs(dim.high) > 9e15) Fail(source, field + ".int", "bounds beyond 2^53");
    }
  }
  if (kinds != 1) Fail(source, field, "needs exactly one of grid, choice, uniform, loguniform, int");
  if (entry.contains("when")) {
    const auto& when = entry.at("when");
    if (!when.is_object() || when.empty()) Fail(source, field + ".when", "must be an object {\"key\": value or [values]}");
    for (const auto& [other, values] : when.items()) {
      std::vector<Json> accepted;
      if (values.is_array()) accepted.assign(values.begin(), values.end());
      else accepted.push_back(values);
      if (accepted.empty()) Fail(source, field + ".when." + other, "lists no value");
      dim.when.emplace_back(other, std::move(accepted));
    }
  }
  return dim;
}

// Sets every value a dimension can take onto the base config (the bounds for ranges), so that a
// key the schema does not know or a value outside its range fails now, naming the dimension.
void CheckAgainstSchema(const Config& base, const Dimension& dim, const std::string& source) {
  std::vector<Json> probes = dim.values;
  if (probes.empty()) {
    if (dim.kind == DimensionKind::kInt) {
      probes = {Json(static_cast<int64_t>(dim.low)), Json(static_cast<int64_t>(dim.high))};
    } else {
      probes = {Json(dim.low), Json(dim.high)};
    }
  }
  for (const auto& value : probes) {
    Config probe = base;
    SetConfigKey(probe, dim.key, value, source + ": space." + dim.key);
  }
  for (const auto& [other, values] : dim.when) {
    for (const auto& value : values) {
      Config probe = base;
      SetConfigKey(probe, other, value, source + ": space." + dim.key + ".when." + other);
    }
  }
}

}  // namespace

Json SweepSpec::ToJson() const {
  Json out;
  out["name"] = name;
  out["base"] = base;
  Json dims = Json::object();
  for (const auto& dim : space) {
    Json entry;
    if (dim.values.empty()) {
      entry[KindName(dim.kind)] = dim.kind == DimensionKind::kInt
                                      ? Json::array({static_cast<int64_t>(dim.low), static_cast<int64_t>(dim.high)})
                                      : Json::array({dim.low, dim.high});
    } else {
      entry[KindName(dim.kind)] = dim.values;
    }
    if (!dim.when.empty()) {
      Json when = Json::object();
      for (const auto& [key, values] : dim.when) when[key] = values;
      entry["when"] = when;
    }
    dims[dim.key] = entry;
  }
  out["space"] = dims;
  out["metric"] = metric;
  out["direction"] = maximize ? "max" : "min";
  out["searcher"] = searcher;
  out["trials"] = trials;
  out["concurrency"] = concurrency;
  out["seed"] = seed;
  Json stopping;
  stopping["rule"] = early_stopping.rule == StoppingRule::kAsha     ? "asha"
                     : early_stopping.rule == StoppingRule::kMedian ? "median"
                                                                    : "none";
  stopping["reduction_factor"] = early_stopping.reduction_factor;
  stopping["grace_period"] = early_stopping.grace_period;
  stopping["max_epochs"] = early_stopping.max_epochs;
  stopping["min_trials"] = early_stopping.min_trials;
  out["early_stopping"] = stopping;
  out["max_attempts"] = max_attempts;
  out["heartbeat_timeout_s"] = heartbeat_timeout_s;
  return out;
}

SweepSpec ParseSweepSpec(const Json& document, const std::string& source, const std::filesystem::path& relative_to) {
  if (!document.is_object()) throw ConfigError(source + ": a sweep spec must be a JSON object");
  static const std::set<std::string> known = {"name",   "base",        "base_config",    "space",
                                              "metric", "direction",   "searcher",       "trials",
                                              "concurrency", "seed",   "early_stopping", "max_attempts",
                                              "heartbeat_timeout_s"};
  for (const auto& [field, value] : document.items()) {
    if (!known.count(field)) Fail(source, field, "unknown field (see `iisan sweep run --help` and the README)");
  }
  SweepSpec spec;
  Optional(document, "name", spec.name, source);
  if (spec.name.empty()) spec.name = "sweep";
  for (char c : spec.name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') {
      Fail(source, "name", "may hold letters, digits, '-', '_' and '.' only");
    }
  }
  if (document.contains("base") && document.contains("base_config")) {
    Fail(source, "base_config", "give either base or base_config, not both");
  }
  spec.base = Json::object();
  if (document.contains("base")) {
    spec.base = document.at("base");
    if (!spec.base.is_object()) Fail(source, "base", "must be a config object");
  } else if (document.contains("base_config")) {
    std::string file;
    Optional(document, "base_config", file, source);
    std::filesystem::path path = file;
    if (path.is_relative() && !relative_to.empty()) path = relative_to / path;
    spec.base = data::ReadJsonFile<Json>(path);
  }
  const Config base = ConfigFromJson(spec.base, source + ": base");

  if (!document.contains("space") || !document.at("space").is_object() || document.at("space").empty()) {
    Fail(source, "space", "must be a non-empty object of config keys");
  }
  for (const auto& [key, entry] : document.at("space").items()) {
    auto dim = ParseDimension(key, entry, source);
    CheckAgainstSchema(base, dim, source);
    spec.space.push_back(std::move(dim));
  }
  for (const auto& dim : spec.space) {
    for (const auto& [other, values] : dim.when) {
      if (other == dim.key) Fail(source, "space." + dim.key + ".when", "a key cannot depend on itself");
    }
  }

  Optional(document, "metric", spec.metric, source);
  {
    const auto dot = spec.metric.find('.');
    const auto at = spec.metric.find('@');
    const std::string head = spec.metric.substr(0, dot);
    const std::string kind = dot == std::string::npos ? "" : spec.metric.substr(dot + 1, at - dot - 1);
    bool ok = head == "valid" && (kind == "hr" || kind == "ndcg") && at != std::string::npos && at + 1 < spec.metric.size();
    if (ok) {
      const std::string k = spec.metric.substr(at + 1);
      ok = std::all_of(k.begin(), k.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); }) &&
           k.size() < 6;
      if (ok && std::find(base.eval.ks.begin(), base.eval.ks.end(), std::stoi(k)) == base.eval.ks.end()) {
        Fail(source, "metric", spec.metric + ": K=" + k + " is not in the base config's eval.ks");
      }
    }
    if (!ok) Fail(source, "metric", "\"" + spec.metric + "\" is not valid.hr@K or valid.ndcg@K");
  }
  std::string direction = "max";
  Optional(document, "direction", direction, source);
  if (direction != "max" && direction != "min") Fail(source, "direction", "must be \"max\" or \"min\"");
  spec.maximize = direction == "max";
  Optional(document, "searcher", spec.searcher, source);
  if (spec.searcher != "grid" && spec.searcher != "random") Fail(source, "searcher", "must be \"grid\" or \"random\"");
  if (spec.searcher == "grid") {
    for (const auto& dim : spec.space) {
      if (dim.values.empty()) {
        Fail(source, "space." + dim.key, "the grid searcher needs grid or choice values (not a range)");
      }
    }
  }
  spec.trials = BoundedInt(document, "trials", 0, 0, 1000000, source);
  if (spec.searcher == "random" && spec.trials == 0) Fail(source, "trials", "the random searcher needs a budget > 0");
  spec.concurrency = BoundedInt(document, "concurrency", 1, 1, 4096, source);
  if (document.contains("seed")) {
    const auto& seed = document.at("seed");
    if (!seed.is_number_unsigned() && !(seed.is_number_integer() && seed.get<int64_t>() >= 0)) {
      Fail(source, "seed", "must be a non-negative integer");
    }
    spec.seed = seed.is_number_unsigned() ? seed.get<uint64_t>() : static_cast<uint64_t>(seed.get<int64_t>());
  }
  spec.max_attempts = BoundedInt(document, "max_attempts", 3, 1, 100, source);
  if (document.contains("heartbeat_timeout_s")) {
    const auto& value = document.at("heartbeat_timeout_s");
    if (!value.is_number() || !std::isfinite(value.get<double>()) || value.get<double>() < 1 ||
        value.get<double>() > 86400) {
      Fail(source, "heartbeat_timeout_s", "must be a number of seconds in [1, 86400]");
    }
    spec.heartbeat_timeout_s = value.get<double>();
  }
  if (document.contains("early_stopping")) {
    const auto& stop = document.at("early_stopping");
    const std::string field = "early_stopping";
    if (!stop.is_object()) Fail(source, field, "must be an object");
    for (const auto& [name, value] : stop.items()) {
      static const std::set<std::string> fields = {"rule", "reduction_factor", "grace_period", "max_epochs", "min_trials"};
      if (!fields.count(name)) Fail(source, field + "." + name, "unknown field");
    }
    std::string rule = "none";
    Optional(stop, "rule", rule, source);
    if (rule == "asha") spec.early_stopping.rule = StoppingRule::kAsha;
    else if (rule == "median") spec.early_stopping.rule = StoppingRule::kMedian;
    else if (rule != "none") Fail(source, field + ".rule", "must be asha, median or none");
    spec.early_stopping.reduction_factor = BoundedInt(stop, "reduction_factor", 3, 2, 100, source);
    spec.early_stopping.grace_period = BoundedInt(stop, "grace_period", 1, 1, 100000, source);
    spec.early_stopping.max_epochs = BoundedInt(stop, "max_epochs", 0, 0, 1000000, source);
    spec.early_stopping.min_trials = BoundedInt(stop, "min_trials", 3, 1, 100000, source);
  }
  return spec;
}

SweepSpec ReadSweepSpec(const std::filesystem::path& file) {
  const auto document = data::ReadJsonFile<Json>(file);
  return ParseSweepSpec(document, file.string(), file.parent_path());
}

std::optional<double> MetricOf(const Json& record, const std::string& metric) {
  const auto dot = metric.find('.');
  const auto at = metric.find('@');
  if (dot == std::string::npos || at == std::string::npos) return std::nullopt;
  std::string kind = metric.substr(dot + 1, at - dot - 1);
  std::transform(kind.begin(), kind.end(), kind.begin(), [](unsigned char c) { return std::toupper(c); });
  const std::string field = kind + "@" + metric.substr(at + 1);
  const std::string split = metric.substr(0, dot);
  if (!record.is_object() || !record.contains(split) || !record.at(split).is_object()) return std::nullopt;
  const auto& metrics = record.at(split);
  if (!metrics.contains(field) || !metrics.at(field).is_number()) return std::nullopt;
  const double value = metrics.at(field).get<double>();
  if (!std::isfinite(value)) return std::nullopt;
  return value;
}

Config TrialConfig(const SweepSpec& spec, const Json& params, const std::string& source) {
  Config config = ConfigFromJson(spec.base, source);
  for (const auto& [key, value] : params.items()) SetConfigKey(config, key, value, source + ": " + key);
  if (spec.early_stopping.max_epochs > 0) config.train.epochs = spec.early_stopping.max_epochs;
  ValidateConfig(config, source);
  return config;
}

}  // namespace iisan::launcher::sweep
