#include "launcher/sweep/searcher.h"

#include <cmath>
#include <set>

namespace iisan::launcher::sweep {
namespace {

// SplitMix64: a fixed, platform-independent mix (the standard library's distributions are not
// specified bit for bit, so a sweep's draws are made here).
uint64_t Mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

uint64_t HashKey(const std::string& key) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : key) h = (h ^ c) * 1099511628211ull;
  return h;
}

// A uniform double in [0, 1) for (seed, trial, key).
double Unit(uint64_t seed, int trial, const std::string& key) {
  const uint64_t bits = Mix(Mix(seed) ^ Mix(static_cast<uint64_t>(trial) + 0x1234567ull) ^ HashKey(key));
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

// The value `key` has in a trial: searched (params) or the base config's.
Json ValueOf(const Json& base_flat, const Json& params, const std::string& key) {
  if (params.contains(key)) return params.at(key);
  std::string pointer = "/" + key;
  for (auto& c : pointer) {
    if (c == '.') c = '/';
  }
  return base_flat.contains(pointer) ? base_flat.at(pointer) : Json();
}

bool Active(const Dimension& dim, const Json& base_flat, const Json& params) {
  for (const auto& [key, accepted] : dim.when) {
    const Json value = ValueOf(base_flat, params, key);
    bool any = false;
    for (const auto& candidate : accepted) any = any || candidate == value;
    if (!any) return false;
  }
  return true;
}

// Drops the values of dimensions whose condition does not hold, in spec order (a condition may
// name a key searched before it), and orders the result as the spec does.
Json ApplyConditions(const SweepSpec& spec, const Json& base_flat, const Json& full) {
  Json params = Json::object();
  for (const auto& dim : spec.space) {
    if (!full.contains(dim.key)) continue;
    if (Active(dim, base_flat, params)) params[dim.key] = full.at(dim.key);
  }
  return params;
}

Json BaseFlat(const SweepSpec& spec) { return ConfigToJson(ConfigFromJson(spec.base, "sweep base")).flatten(); }

class GridSearcher : public Searcher {
 public:
  explicit GridSearcher(const SweepSpec& spec) {
    const Json base = BaseFlat(spec);
    size_t total = 1;
    for (const auto& dim : spec.space) {
      total *= dim.values.size();
      if (total > 1000000) throw ConfigError("sweep: the grid has more than 1,000,000 combinations");
    }
    std::set<std::string> seen;
    for (size_t index = 0; index < total; ++index) {
      Json full = Json::object();
      size_t rest = index;
      // The last dimension varies fastest.
      for (auto dim = spec.space.rbegin(); dim != spec.space.rend(); ++dim) {
        full[dim->key] = dim->values[rest % dim->values.size()];
        rest /= dim->values.size();
      }
      Json params = ApplyConditions(spec, base, full);
      if (seen.insert(params.dump()).second) combos_.push_back(std::move(params));
    }
    budget_ = spec.trials > 0 ? std::min<int>(spec.trials, static_cast<int>(combos_.size()))
                              : static_cast<int>(combos_.size());
  }
  std::optional<Json> Suggest(int index, const std::vector<Observation>&) override {
    if (index < 0 || index >= budget_) return std::nullopt;
    return combos_[static_cast<size_t>(index)];
  }
  int Budget() const override { return budget_; }

 private:
  std::vector<Json> combos_;
  int budget_ = 0;
};

class RandomSearcher : public Searcher {
 public:
  explicit RandomSearcher(const SweepSpec& spec) : spec_(spec), base_(BaseFlat(spec)) {
    for (const auto& dim : spec.space) {
      if (dim.kind == DimensionKind::kGrid) {
        grid_size_ *= dim.values.size();
        if (grid_size_ > 1000000) throw ConfigError("sweep: the grid dimensions have more than 1,000,000 combinations");
      }
    }
  }
  std::optional<Json> Suggest(int index, const std::vector<Observation>&) override {
    if (index < 0 || index >= spec_.trials) return std::nullopt;
    Json full = Json::object();
    size_t rest = static_cast<size_t>(index) % grid_size_;
    for (auto dim = spec_.space.rbegin(); dim != spec_.space.rend(); ++dim) {
      if (dim->kind != DimensionKind::kGrid) continue;
      full[dim->key] = dim->values[rest % dim->values.size()];
      rest /= dim->values.size();
    }
    for (const auto& dim : spec_.space) {
      const double u = Unit(spec_.seed, index, dim.key);
      switch (dim.kind) {
        case DimensionKind::kGrid: break;
        case DimensionKind::kChoice: {
          auto pick = static_cast<size_t>(u * static_cast<double>(dim.values.size()));
          full[dim.key] = dim.values[std::min(pick, dim.values.size() - 1)];
          break;
        }
        case DimensionKind::kUniform: full[dim.key] = dim.low + u * (dim.high - dim.low); break;
        case DimensionKind::kLogUniform:
          full[dim.key] = std::exp(std::log(dim.low) + u * (std::log(dim.high) - std::log(dim.low)));
          break;
        case DimensionKind::kInt: {
          const double span = dim.high - dim.low + 1;
          const auto value = static_cast<int64_t>(dim.low + std::floor(u * span));
          full[dim.key] = std::min(value, static_cast<int64_t>(dim.high));
          break;
        }
      }
    }
    return ApplyConditions(spec_, base_, full);
  }
  int Budget() const override { return spec_.trials; }

 private:
  SweepSpec spec_;
  Json base_;
  size_t grid_size_ = 1;
};

}  // namespace

std::unique_ptr<Searcher> MakeSearcher(const SweepSpec& spec) {
  if (spec.searcher == "grid") return std::make_unique<GridSearcher>(spec);
  return std::make_unique<RandomSearcher>(spec);
}

}  // namespace iisan::launcher::sweep
