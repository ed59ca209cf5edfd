// The run configuration: one JSON document whose every key has a default. User files and
// `--set a.b=value` overrides are merged onto the defaults; an unknown key is an error that
// names the nearest valid key, and a value of the wrong type names the key and both types.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace iisan::launcher {

using Json = nlohmann::ordered_json;

// Every key the framework understands, with its default value.
const Json& DefaultConfig();

class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Merges `overlay` onto `base` recursively. `source` names where the overlay came from in errors.
void MergeConfig(Json& base, const Json& overlay, const std::string& source);

// Applies one `key.path=value` override. The value is parsed as JSON when it parses,
// otherwise taken as a string, then checked against the default's type.
void ApplyOverride(Json& config, const std::string& assignment);

// Defaults, then the file (when not empty), then each override in order.
Json ResolveConfig(const std::filesystem::path& file, const std::vector<std::string>& overrides);

// Typed access by dotted path ("train.batch_size"); throws ConfigError when absent.
const Json& At(const Json& config, const std::string& dotted);

}  // namespace iisan::launcher
