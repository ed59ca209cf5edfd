// A sweep's specification (SPEC.json): a base config, a search space over config keys, the
// metric to optimise, the searcher, the early-stopping rule and the budget. Every searched key
// is checked against the config schema when the spec is read (its lowest and highest value are
// applied to the base config), so a bad key or range fails before any trial starts.
//
//   {
//     "name": "lr-sweep",
//     "base": {"data": {"dir": "..."}, "train": {"device": "cuda"}},   // or "base_config": "file.json"
//     "space": {
//       "train.lr.recsys": {"loguniform": [1e-5, 1e-2]},
//       "model.dropout":   {"uniform": [0.0, 0.3]},
//       "model.embedding_dim": {"choice": [32, 64, 128]},
//       "seed":            {"int": [1, 1000]},
//       "model.lora_rank": {"grid": [4, 8], "when": {"model.method": "lora"}}
//     },
//     "metric": "valid.hr@10", "direction": "max",
//     "searcher": "random", "trials": 64, "concurrency": 8, "seed": 1,
//     "early_stopping": {"rule": "asha", "reduction_factor": 3, "grace_period": 1, "max_epochs": 20}
//   }
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "launcher/config.h"

namespace iisan::launcher::sweep {

enum class DimensionKind { kGrid, kChoice, kUniform, kLogUniform, kInt };

struct Dimension {
  std::string key;  // a config key, dotted
  DimensionKind kind = DimensionKind::kChoice;
  std::vector<Json> values;  // grid, choice
  double low = 0, high = 0;  // uniform, loguniform, int (inclusive)
  // Searched only when every listed key has one of its values (in the trial's config: the base
  // with the searched values applied); otherwise the base value stays.
  std::vector<std::pair<std::string, std::vector<Json>>> when;
};

enum class StoppingRule { kNone, kAsha, kMedian };

struct EarlyStopping {
  StoppingRule rule = StoppingRule::kNone;
  int reduction_factor = 3;  // ASHA: keep the best 1/reduction_factor at each rung
  int grace_period = 1;      // ASHA: first rung (epochs); median: no decision before this epoch
  int max_epochs = 0;        // every trial's train.epochs (0: the base config's)
  int min_trials = 3;        // median: compare once this many earlier trials reached the epoch
};

struct SweepSpec {
  std::string name;
  Json base;  // config overlay (the spec's "base", or base_config's content)
  std::vector<Dimension> space;
  std::string metric = "valid.hr@10";  // valid.hr@K | valid.ndcg@K
  bool maximize = true;
  std::string searcher = "random";  // grid | random
  int trials = 0;                   // budget (grid: 0 = the whole grid)
  int concurrency = 1;
  uint64_t seed = 0;
  EarlyStopping early_stopping;
  int max_attempts = 3;             // a trial whose worker dies is retried up to this many times in all
  double heartbeat_timeout_s = 60;  // a running trial without a heartbeat for this long is retried

  Json ToJson() const;
};

// Reads and validates a spec (bounded JSON). ConfigError naming the file and the field.
SweepSpec ReadSweepSpec(const std::filesystem::path& file);
SweepSpec ParseSweepSpec(const Json& document, const std::string& source,
                         const std::filesystem::path& relative_to = {});

// The metric named by spec.metric in an epoch's metrics line (EpochRecord JSON); nullopt when
// absent or not finite.
std::optional<double> MetricOf(const Json& epoch_record, const std::string& metric);

// The trial's config: base, then each searched value (flat {"dotted.key": value}), validated.
Config TrialConfig(const SweepSpec& spec, const Json& params, const std::string& source);

}  // namespace iisan::launcher::sweep
