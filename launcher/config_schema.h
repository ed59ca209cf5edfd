// The config schema's entry type, shared by config_schema.cpp (the table of every key) and
// config.cpp (loading, validation, --set, suggestions). Internal to the config module.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "launcher/config.h"

namespace iisan::launcher::schema {

enum class KeyType { kString, kInteger, kNumber, kBoolean, kIntegerList };

const char* KeyTypeName(KeyType type);

struct KeySpec {
  std::string key;  // dotted
  KeyType type = KeyType::kString;
  Json default_value;
  std::string help;
  // kInteger, and each entry of kIntegerList: inclusive range.
  int64_t min_integer = 0;
  uint64_t max_integer = 0;
  size_t max_items = 0;  // kIntegerList: longest list
  // kNumber: inclusive range; the value must also be finite.
  double min_number = 0, max_number = 0;
  // kString: when not empty, the value must be one of these...
  std::vector<std::string> choices;
  // ...or, when `matches` is set, match the pattern that `pattern` describes.
  std::string pattern;
  bool (*matches)(const std::string&) = nullptr;
  bool secret = false;  // redacted by ConfigToJson
  // The struct field: read as JSON, and written from a checked JSON value of the key's type.
  std::function<Json(const Config&)> read;
  std::function<void(Config&, const Json&)> write;
};

// Every key, in the order of a config file.
const std::vector<KeySpec>& Keys();

}  // namespace iisan::launcher::schema
