// The run configuration: typed structs whose every key is described once, in the schema of
// launcher/config_schema.cpp (type, default, range or choices, help, struct field). Files and
// `--set a.b=value` overrides are applied onto the defaults key by key and validated there; an
// unknown key is an error that names the nearest valid key, a value of the wrong type names the
// key and both types, an out-of-range value names the key and its range. Code below this module
// reads the typed fields, never JSON by string key.
#pragma once

#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace iisan::launcher {

using Json = nlohmann::ordered_json;

class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Field names are the JSON key names (`train.lr.recsys` is `config.train.lr.recsys`).
// train.batch_size and train.lr.* may be 0: the method's reference value (filled in by
// PrepareJob). The defaults live in the schema only: use LoadConfig("", {}) for them.
struct Config {
  std::string name;
  std::string run_root;
  uint64_t seed;
  struct Data {
    std::string dir;
    int min_seq_len;
    int max_seq_len;
    bool operator==(const Data&) const = default;
  } data;
  struct Model {
    std::string method, modality, text_backbone, image_backbone;
    uint64_t backbone_init_seed;
    std::vector<int> kept_layers;
    std::string iisan_towers, fusion, iisan_schedule;
    int64_t bottleneck, embedding_dim;
    double gate_temperature;
    int64_t user_blocks, user_heads;
    double dropout;
    int title_max_tokens;
    int64_t adapter_bottleneck, lora_rank;
    double lora_alpha;
    bool operator==(const Model&) const = default;
  } model;
  struct Cache {
    std::string path, dir;
    int64_t batch_size, chunk_items;
    int threads;
    std::string dtype, service, token;
    double service_timeout_s;
    bool operator==(const Cache&) const = default;
  } cache;
  struct Train {
    std::string device;
    int64_t batch_size;
    int epochs, patience;
    int64_t max_steps_per_epoch;
    bool cuda_graph;
    std::string matmul_precision;  // "auto", "float32" or "tf32"
    std::string resume;  // "false", "true" or "auto"
    int max_requeues;
    int checkpoint_every;
    int64_t check_sync_every;
    int64_t profile_steps;
    double collective_timeout_s, bucket_mb;
    struct Lr {
      double recsys, text, image, adapter_text, adapter_image;
      double scale;  // multiplies every group once resolved: a one-knob learning-rate sweep
      bool operator==(const Lr&) const = default;
    } lr;
    bool operator==(const Train&) const = default;
  } train;
  struct Eval {
    int64_t batch_size, memory_mb;
    std::vector<int> ks;
    bool count_repeated_targets;
    bool operator==(const Eval&) const = default;
  } eval;
  bool operator==(const Config&) const = default;
};

// Defaults, then the file (when not empty; JSON with comments allowed), then each override in
// order; every value validated.
Config LoadConfig(const std::filesystem::path& file, const std::vector<std::string>& overrides);

// Defaults, then `document` (a whole config or an overlay, e.g. a run directory's config.json or
// a cache-service request), validated. `source` names the document in errors.
Config ConfigFromJson(const Json& document, const std::string& source);

// What ConfigToJson writes in place of a secret.
inline constexpr char kRedacted[] = "<redacted>";
// The cache service's token when cache.token is empty (or the placeholder of a written config).
inline constexpr char kCacheTokenEnvironment[] = "IISAN_CACHE_TOKEN";

// Every key, nested as in a config file, in schema order. With `redact_secrets`, a set
// cache.token is written as kRedacted.
Json ConfigToJson(const Config& config, bool redact_secrets = true);

// The token to present to (or, for `cache serve`, require of) the cache service: cache.token,
// else $IISAN_CACHE_TOKEN, else none. A run directory's config.json holds kRedacted instead of the
// token: then the environment's token, or a ConfigError that says how to pass it.
std::string CacheServiceToken(const Config& config);

// Sets one key ("train.batch_size", or a section such as "train.lr" given an object) after
// checking its type and range. `source` names where the value came from in errors.
void SetConfigKey(Config& config, const std::string& dotted, const Json& value, const std::string& source);

// Applies one `key.path=value` override: the value is parsed as JSON when it parses, otherwise
// taken as a string (a string key given a bare number, `--set name=42`, keeps the text).
void ApplyOverride(Config& config, const std::string& assignment);

// Checks every field of a config that code may have changed after loading (types are fixed by
// the struct; ranges, choices and finiteness are checked). Throws ConfigError.
void ValidateConfig(const Config& config, const std::string& source = "config");

// Every key: {"key", "type", "default", "min", "max" | "choices" | "pattern", "help"} (list keys:
// min/max bound each entry, "max_items" the length), in schema order.
Json ConfigSchemaJson();

}  // namespace iisan::launcher
