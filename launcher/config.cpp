// Config loading and validation on the schema of config_schema.cpp: defaults, files, `--set`
// overrides, type and range checks, the nearest-key suggestion, JSON out and the schema as JSON.
#include "launcher/config.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "launcher/config_schema.h"
#include "core/data/json_input.h"
#include "core/data/text_file.h"

namespace iisan::launcher {
namespace {

using schema::KeySpec;
using schema::KeyType;

const KeySpec* FindKey(const std::string& dotted) {
  static const auto index = [] {
    std::map<std::string, const KeySpec*> out;
    for (const auto& spec : schema::Keys()) out.emplace(spec.key, &spec);
    return out;
  }();
  const auto it = index.find(dotted);
  return it == index.end() ? nullptr : it->second;
}

// The objects that hold keys: "train", "train.lr", ...
const std::set<std::string>& Sections() {
  static const auto sections = [] {
    std::set<std::string> out;
    for (const auto& spec : schema::Keys()) {
      for (auto dot = spec.key.find('.'); dot != std::string::npos; dot = spec.key.find('.', dot + 1)) {
        out.insert(spec.key.substr(0, dot));
      }
    }
    return out;
  }();
  return sections;
}

size_t EditDistance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

std::string Join(const std::string& prefix, const std::string& key) {
  return prefix.empty() ? key : prefix + "." + key;
}

std::string Leaf(const std::string& dotted) {
  const auto dot = dotted.rfind('.');
  return dot == std::string::npos ? dotted : dotted.substr(dot + 1);
}

// The valid key or section nearest to `wanted`, comparing both the full dotted path and the
// last component, so that `lr` under the wrong parent still finds `train.lr`.
std::string NearestKey(const std::string& full) {
  // Keys are short: comparing a megabyte-long one in full would take seconds per candidate.
  const std::string wanted = full.substr(0, 128);
  std::vector<std::string> candidates(Sections().begin(), Sections().end());
  for (const auto& spec : schema::Keys()) candidates.push_back(spec.key);
  std::string best;
  size_t best_distance = SIZE_MAX;
  for (const auto& key : candidates) {
    const size_t distance = std::min(EditDistance(wanted, key), EditDistance(Leaf(wanted), Leaf(key)) + 1);
    if (distance < best_distance || (distance == best_distance && key < best)) {
      best_distance = distance;
      best = key;
    }
  }
  return best;
}

const char* JsonTypeName(const Json& value) {
  if (value.is_number_integer()) return "integer";
  if (value.is_number()) return "number";
  return value.type_name();
}

std::string Quote(const std::string& text) { return "'" + text + "'"; }

std::string NumberText(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value < 0 ? "-inf" : "inf";
  return Json(value).dump();
}

std::string ValueText(const Json& value) {
  return value.is_number_float() ? NumberText(value.get<double>()) : value.dump();
}

std::string Prefix(const std::string& source) { return source.empty() ? "" : source + ": "; }

[[noreturn]] void TypeMismatch(const KeySpec& spec, const Json& value, const std::string& source) {
  throw ConfigError(Prefix(source) + "config key " + Quote(spec.key) + " must be " + schema::KeyTypeName(spec.type) +
                    ", got " + JsonTypeName(value) + " (" + ValueText(value) + ")");
}

std::string IntegerRange(const KeySpec& spec) {
  return "[" + std::to_string(spec.min_integer) + ", " + std::to_string(spec.max_integer) + "]";
}

bool IntegerInRange(const KeySpec& spec, const Json& value) {
  if (value.is_number_unsigned()) {
    const uint64_t v = value.get<uint64_t>();
    return (spec.min_integer <= 0 || v >= static_cast<uint64_t>(spec.min_integer)) && v <= spec.max_integer;
  }
  const int64_t v = value.get<int64_t>();
  return v >= spec.min_integer && (v < 0 || static_cast<uint64_t>(v) <= spec.max_integer);
}

// Checks `value` against the key's type, range and choices; returns it in the key's JSON form
// (numbers as floating point).
Json Checked(const KeySpec& spec, const Json& value, const std::string& source) {
  const std::string where = Prefix(source) + "config key " + Quote(spec.key);
  switch (spec.type) {
    case KeyType::kString: {
      // A choice of "true"/"false" (train.resume) also takes JSON's true and false.
      if (value.is_boolean() && !spec.choices.empty() &&
          std::find(spec.choices.begin(), spec.choices.end(), "true") != spec.choices.end()) {
        return Checked(spec, Json(value.get<bool>() ? "true" : "false"), source);
      }
      if (!value.is_string()) TypeMismatch(spec, value, source);
      const auto& text = value.get_ref<const std::string&>();
      if (!spec.choices.empty() && std::find(spec.choices.begin(), spec.choices.end(), text) == spec.choices.end()) {
        std::string list;
        for (const auto& choice : spec.choices) list += (list.empty() ? "" : ", ") + choice;
        throw ConfigError(where + " must be one of " + list + "; got " + Quote(text));
      }
      if (spec.matches && !spec.matches(text)) throw ConfigError(where + " must be " + spec.pattern + ", got " + Quote(text));
      return value;
    }
    case KeyType::kBoolean:
      if (!value.is_boolean()) TypeMismatch(spec, value, source);
      return value;
    case KeyType::kInteger:
      if (!value.is_number_integer()) TypeMismatch(spec, value, source);
      if (!IntegerInRange(spec, value)) {
        throw ConfigError(where + " must be in " + IntegerRange(spec) + ", got " + value.dump());
      }
      return value;
    case KeyType::kNumber: {
      if (!value.is_number()) TypeMismatch(spec, value, source);
      const double number = value.get<double>();
      if (!std::isfinite(number) || number < spec.min_number || number > spec.max_number) {
        throw ConfigError(where + " must be in [" + NumberText(spec.min_number) + ", " + NumberText(spec.max_number) +
                          "], got " + NumberText(number));
      }
      return Json(number);
    }
    case KeyType::kIntegerList: {
      if (!value.is_array() || !std::all_of(value.begin(), value.end(), [](const Json& entry) {
            return entry.is_number_integer();
          })) {
        TypeMismatch(spec, value, source);
      }
      if (value.size() > spec.max_items) {
        throw ConfigError(where + " may have at most " + std::to_string(spec.max_items) + " entries, got " +
                          std::to_string(value.size()));
      }
      for (const auto& entry : value) {
        if (!IntegerInRange(spec, entry)) {
          throw ConfigError(where + " entries must be in " + IntegerRange(spec) + ", got " + entry.dump());
        }
      }
      return value;
    }
  }
  TypeMismatch(spec, value, source);
}

const Config& Defaults() {
  static const Config defaults = [] {
    Config config{};
    for (const auto& spec : schema::Keys()) spec.write(config, Checked(spec, spec.default_value, "the schema"));
    return config;
  }();
  return defaults;
}

[[noreturn]] void UnknownKey(const std::string& dotted, const std::string& source) {
  throw ConfigError(Prefix(source) + "unknown config key " + Quote(dotted) + "; did you mean " +
                    Quote(NearestKey(dotted)) + "?");
}

// Sets every member of the object `overlay` found under `prefix` ("" for a whole config).
void MergeObject(Config& config, const std::string& prefix, const Json& overlay, const std::string& source) {
  for (auto it = overlay.begin(); it != overlay.end(); ++it) {
    // A member name with a dot ({"lr.text": 1}) is not a key of this object.
    if (it.key().empty() || it.key().find('.') != std::string::npos) UnknownKey(Join(prefix, it.key()), source);
    SetConfigKey(config, Join(prefix, it.key()), *it, source);
  }
}

void Merge(Config& config, const Json& overlay, const std::string& source) {
  if (!overlay.is_object()) throw ConfigError(Prefix(source) + "the config must be a JSON object");
  MergeObject(config, "", overlay, source);
}

Json ParseFile(const std::filesystem::path& file) {
  if (!std::ifstream(file)) throw ConfigError(file.string() + ": cannot open the config file");
  data::JsonLimits limits;
  limits.max_bytes = size_t{1} << 20;
  limits.allow_comments = true;
  try {
    return data::ReadJsonFile<Json>(file, limits);
  } catch (const data::InputError& error) {
    throw ConfigError(std::string(error.what()) + "; check it with `python3 -m json.tool`");
  }
}

}  // namespace

void SetConfigKey(Config& config, const std::string& dotted, const Json& value, const std::string& source) {
  if (const KeySpec* spec = FindKey(dotted)) {
    spec->write(config, Checked(*spec, value, source));
    return;
  }
  if (Sections().count(dotted)) {
    if (!value.is_object()) {
      throw ConfigError(Prefix(source) + "config key " + Quote(dotted) + " must be an object, got " +
                        JsonTypeName(value));
    }
    MergeObject(config, dotted, value, source);
    return;
  }
  UnknownKey(dotted, source);
}

void ApplyOverride(Config& config, const std::string& assignment) {
  const auto equals = assignment.find('=');
  if (equals == std::string::npos || equals == 0) {
    throw ConfigError("--set '" + assignment + "': expected key.path=value");
  }
  // Every config is written out as JSON (the run directory's config.json), which holds UTF-8 only.
  if (const size_t bad = data::FindInvalidUtf8(assignment); bad != std::string::npos) {
    throw ConfigError("--set: byte " + std::to_string(bad) + " of the override is not valid UTF-8; config keys and "
                      "values must be UTF-8 text");
  }
  const std::string dotted = assignment.substr(0, equals);
  const std::string text = assignment.substr(equals + 1);
  // JSON when it is JSON (bounded in depth like every input), else the text itself.
  Json value = text;
  if (Json::accept(text)) {
    try {
      value = data::ParseJsonInput<Json>(text, "--set " + dotted);
    } catch (const data::InputError& error) {
      throw ConfigError(error.what());
    }
  }
  // A string key given a bare number, boolean or null (e.g. --set name=42) keeps the text.
  const KeySpec* spec = FindKey(dotted);
  if (spec && spec->type == KeyType::kString && !value.is_string() && !value.is_object() && !value.is_array()) {
    value = text;
  }
  SetConfigKey(config, dotted, value, "--set " + dotted);
}

Config ConfigFromJson(const Json& document, const std::string& source) {
  Config config = Defaults();
  Merge(config, document, source);
  return config;
}

Config LoadConfig(const std::filesystem::path& file, const std::vector<std::string>& overrides) {
  Config config = file.empty() ? Defaults() : ConfigFromJson(ParseFile(file), file.string());
  for (const auto& assignment : overrides) ApplyOverride(config, assignment);
  return config;
}

Json ConfigToJson(const Config& config, bool redact_secrets) {
  Json out = Json::object();
  for (const auto& spec : schema::Keys()) {
    Json* node = &out;
    std::stringstream path(spec.key);
    std::string part, next;
    std::getline(path, part, '.');
    while (std::getline(path, next, '.')) {
      node = &(*node)[part];
      part = next;
    }
    Json value = spec.read(config);
    if (redact_secrets && spec.secret && !value.get<std::string>().empty()) value = kRedacted;
    (*node)[part] = std::move(value);
  }
  return out;
}

std::string CacheServiceToken(const Config& config) {
  const char* environment = std::getenv(kCacheTokenEnvironment);
  const std::string from_environment = environment ? environment : "";
  if (config.cache.token == kRedacted) {
    if (!from_environment.empty()) return from_environment;
    throw ConfigError(std::string("cache.token is \"") + kRedacted + "\": written configs (a run directory's "
                      "config.json) do not keep the cache service's token; pass it with --set cache.token=TOKEN or "
                      "in the environment variable " + kCacheTokenEnvironment);
  }
  return config.cache.token.empty() ? from_environment : config.cache.token;
}

void ValidateConfig(const Config& config, const std::string& source) {
  for (const auto& spec : schema::Keys()) Checked(spec, spec.read(config), source);
}

Json ConfigSchemaJson() {
  Json out = Json::array();
  for (const auto& spec : schema::Keys()) {
    Json entry;
    entry["key"] = spec.key;
    entry["type"] = schema::KeyTypeName(spec.type);
    entry["default"] = spec.type == KeyType::kNumber ? Json(spec.default_value.get<double>()) : spec.default_value;
    if (spec.type == KeyType::kInteger || spec.type == KeyType::kIntegerList) {
      entry["min"] = spec.min_integer;
      entry["max"] = spec.max_integer;
    }
    if (spec.type == KeyType::kIntegerList) entry["max_items"] = spec.max_items;
    if (spec.type == KeyType::kNumber) {
      entry["min"] = spec.min_number;
      entry["max"] = spec.max_number;
    }
    if (!spec.choices.empty()) entry["choices"] = spec.choices;
    if (spec.matches) entry["pattern"] = spec.pattern;
    entry["help"] = spec.help;
    out.push_back(std::move(entry));
  }
  return out;
}

}  // namespace iisan::launcher
