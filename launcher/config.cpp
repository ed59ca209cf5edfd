// Config defaults, merging and validation. The defaults below are the one place where every
// knob and its default live. train.batch_size and train.lr.* default to 0, which means the
// reference's value for model.method (IISAN.md §6: batch 64 for IISAN, 32 for the baselines).
#include "launcher/config.h"

#include <algorithm>
#include <fstream>
#include <sstream>

namespace iisan::launcher {
namespace {

Json BuildDefaults() {
  return Json::parse(R"({
    "name": "",
    "run_root": "runs",
    "seed": 12345,
    "data": {
      "dir": "",
      "min_seq_len": 5,
      "max_seq_len": 10
    },
    "model": {
      "method": "iisan",
      "modality": "text+image",
      "text_backbone": "",
      "image_backbone": "",
      "kept_layers": [],
      "bottleneck": 64,
      "embedding_dim": 64,
      "gate_temperature": 0.1,
      "user_blocks": 2,
      "user_heads": 2,
      "dropout": 0.1,
      "title_max_tokens": 30,
      "adapter_bottleneck": 64,
      "lora_rank": 8,
      "lora_alpha": 1.0
    },
    "cache": {
      "path": "",
      "dir": "cache",
      "batch_size": 512,
      "chunk_items": 1024,
      "threads": 0,
      "dtype": "float32",
      "service": "",
      "token": ""
    },
    "train": {
      "device": "cpu",
      "batch_size": 0,
      "epochs": 100,
      "patience": 10,
      "max_steps_per_epoch": 0,
      "cuda_graph": true,
      "resume": false,
      "checkpoint_every": 1,
      "check_sync_every": 0,
      "collective_timeout_s": 300.0,
      "bucket_mb": 4.0,
      "lr": {
        "recsys": 0.0,
        "text": 0.0,
        "image": 0.0,
        "adapter_text": 0.0,
        "adapter_image": 0.0
      }
    },
    "eval": {
      "batch_size": 256,
      "ks": [5, 10, 20]
    }
  })");
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

// All dotted keys of the defaults, to suggest the nearest one for a typo at any depth.
void CollectKeys(const Json& node, const std::string& prefix, std::vector<std::string>& out) {
  for (auto it = node.begin(); it != node.end(); ++it) {
    const std::string key = Join(prefix, it.key());
    out.push_back(key);
    if (it->is_object()) CollectKeys(*it, key, out);
  }
}

std::string NearestKey(const std::string& wanted) {
  std::vector<std::string> keys;
  CollectKeys(DefaultConfig(), "", keys);
  std::string best;
  size_t best_distance = SIZE_MAX;
  for (const auto& key : keys) {
    // Compare both the full dotted path and the last component, so that `lr` under the
    // wrong parent still finds `train.lr`.
    const std::string leaf = key.substr(key.rfind('.') == std::string::npos ? 0 : key.rfind('.') + 1);
    const std::string wanted_leaf =
        wanted.substr(wanted.rfind('.') == std::string::npos ? 0 : wanted.rfind('.') + 1);
    const size_t distance = std::min(EditDistance(wanted, key), EditDistance(wanted_leaf, leaf) + 1);
    if (distance < best_distance) {
      best_distance = distance;
      best = key;
    }
  }
  return best;
}

const char* TypeName(const Json& value) {
  if (value.is_number_integer()) return "integer";
  if (value.is_number()) return "number";
  return value.type_name();
}

bool SameKind(const Json& expected, const Json& got) {
  if (expected.is_number_float()) return got.is_number();
  if (expected.is_number_integer()) return got.is_number_integer();
  return expected.type() == got.type();
}

void MergeInto(Json& base, const Json& overlay, const std::string& prefix, const std::string& source) {
  if (!overlay.is_object()) {
    throw ConfigError(source + ": the config must be a JSON object");
  }
  for (auto it = overlay.begin(); it != overlay.end(); ++it) {
    const std::string key = Join(prefix, it.key());
    if (!base.contains(it.key())) {
      throw ConfigError(source + ": unknown config key '" + key + "'; did you mean '" +
                        NearestKey(key) + "'?");
    }
    Json& target = base[it.key()];
    if (target.is_object()) {
      if (!it->is_object()) {
        throw ConfigError(source + ": config key '" + key + "' must be an object, got " +
                          TypeName(*it));
      }
      MergeInto(target, *it, key, source);
      continue;
    }
    if (!SameKind(target, *it)) {
      throw ConfigError(source + ": config key '" + key + "' must be " + TypeName(target) +
                        ", got " + TypeName(*it) + " (" + it->dump() + ")");
    }
    target = target.is_number_float() ? Json(it->get<double>()) : *it;
  }
}

}  // namespace

const Json& DefaultConfig() {
  static const Json defaults = BuildDefaults();
  return defaults;
}

void MergeConfig(Json& base, const Json& overlay, const std::string& source) {
  MergeInto(base, overlay, "", source);
}

void ApplyOverride(Json& config, const std::string& assignment) {
  const auto equals = assignment.find('=');
  if (equals == std::string::npos || equals == 0) {
    throw ConfigError("--set '" + assignment + "': expected key.path=value");
  }
  const std::string dotted = assignment.substr(0, equals);
  const std::string text = assignment.substr(equals + 1);
  Json value = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded()) value = text;

  // Build {"a": {"b": value}} and merge it, so overrides get the same checks as files.
  Json overlay = value;
  std::vector<std::string> parts;
  std::stringstream stream(dotted);
  for (std::string part; std::getline(stream, part, '.');) parts.push_back(part);
  for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
    Json wrapper = Json::object();
    wrapper[*it] = std::move(overlay);
    overlay = std::move(wrapper);
  }
  // A string default given a bare number (e.g. --set name=42) stays a string.
  const Json* existing = &config;
  for (const auto& part : parts) {
    if (!existing->is_object() || !existing->contains(part)) { existing = nullptr; break; }
    existing = &(*existing)[part];
  }
  if (existing && existing->is_string() && !value.is_string()) {
    return ApplyOverride(config, dotted + "=" + Json(text).dump());
  }
  MergeInto(config, overlay, "", "--set " + dotted);
}

Json ResolveConfig(const std::filesystem::path& file, const std::vector<std::string>& overrides) {
  Json config = DefaultConfig();
  if (!file.empty()) {
    std::ifstream in(file);
    if (!in) throw ConfigError(file.string() + ": cannot open the config file");
    Json overlay = Json::parse(in, nullptr, /*allow_exceptions=*/false, /*ignore_comments=*/true);
    if (overlay.is_discarded()) {
      throw ConfigError(file.string() + ": not valid JSON; check it with `python3 -m json.tool`");
    }
    MergeConfig(config, overlay, file.string());
  }
  for (const auto& assignment : overrides) ApplyOverride(config, assignment);
  return config;
}

const Json& At(const Json& config, const std::string& dotted) {
  const Json* node = &config;
  std::stringstream stream(dotted);
  for (std::string part; std::getline(stream, part, '.');) {
    if (!node->is_object() || !node->contains(part)) {
      throw ConfigError("config key '" + dotted + "' is missing");
    }
    node = &(*node)[part];
  }
  return *node;
}

}  // namespace iisan::launcher
