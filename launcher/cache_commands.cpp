// The `iisan cache` subcommands: key, build, ls, verify, rm, serve; and the cache step of
// multi-rank jobs.
#include <cmath>
#include <fstream>
#include <iomanip>
#include <random>
#include <set>

#include <glog/logging.h>
#include <torch/torch.h>

#include "cache/cache_dir.h"
#include "cache/ensure.h"
#include "cache/service.h"
#include "cache/state_file.h"
#include "core/data/atomic_file.h"
#include "distributed/rank_log.h"
#include "distributed/rendezvous.h"
#include "launcher/cache_ranks.h"
#include "launcher/commands.h"

namespace iisan::launcher {
namespace {

// The cache commands act on the cached method's key, whatever model.method the config names.
Job PrepareCacheJob(Config config) {
  config.model.method = "iisan";
  return PrepareJob(config);
}

std::string Mebibytes(uintmax_t bytes) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(1) << static_cast<double>(bytes) / (1024.0 * 1024.0) << " MiB";
  return out.str();
}

void PrintStats(const cache::BuildStats& stats, std::ostream& out) {
  const auto json = stats.ToJson();
  out << std::fixed << std::setprecision(2) << "built " << stats.chunks_computed << " of " << stats.chunks_total
      << " chunks here (" << stats.chunks_already_done << " resumed), " << stats.items_computed << " items in "
      << stats.seconds << " s: " << json["items_per_second"].get<double>() << " items/s end to end; forwards "
      << json["forward_seconds"]["total"].get<double>() << " s (text " << stats.forward_seconds_text << ", image "
      << stats.forward_seconds_image << "), " << json["forward_items_per_second"].get<double>() << " items/s, "
      << std::setprecision(3) << json["flops_per_item"]["total"].get<double>() / 1e9 << " GFLOP/item, "
      << json["forward_tflops_per_second"].get<double>() << " TFLOP/s (" << stats.device << ", " << stats.dtype
      << ")\n"
      << std::setprecision(2) << "pipeline: backbones set up in " << stats.setup_seconds << " s, host preparation " << stats.prepare_seconds
      << " s beside the forwards, device waited for the host " << stats.wait_seconds
      << " s, waited for chunk writes " << stats.write_seconds << " s, assembly " << stats.assemble_seconds << " s\n";
}

void WriteJsonFile(const std::filesystem::path& path, const Json& json) {
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
  data::WriteFileAtomically(path, json.dump(2) + "\n");
}

}  // namespace

std::filesystem::path EnsureCacheFileOnRanks(const Job& job, distributed::ProcessGroup& group,
                                             cache::BuildStats* stats) {
  const int rank = group.world.rank;
  if (!job.config.cache.service.empty()) return EnsureCacheFile(job, stats);
  // 0: valid, 1: build, 2: refused (rank 0 throws the reason; the others a pointer to it).
  auto decision = torch::zeros({1}, torch::kInt64);
  std::unique_ptr<cache::FileLock> lock;
  std::string problem;
  if (rank == 0) {
    lock = std::make_unique<cache::FileLock>(cache::LockPathFor(job.cache_path));
    const bool valid = cache::IsValidCache(job.cache_path, job.fingerprint, job.dataset.item_ids, &problem);
    if (valid) cache::RemoveLeftoversOfCommittedBuild(job.cache_path);
    decision[0] = valid ? 0 : (!problem.empty() && !job.cache_content_addressed ? 2 : 1);
  }
  group.host->Broadcast(decision, 0);
  const int64_t verdict = decision[0].item<int64_t>();
  if (verdict == 2) {
    throw cache::CacheError(rank == 0 ? problem + "; delete the file to rebuild it, or leave cache.path empty"
                                      : "rank 0 refused the cache " + job.cache_path.string() + " (see its log)");
  }
  if (verdict == 1) {
    if (rank == 0 && !problem.empty()) {
      LOG(WARNING) << problem << "; rebuilding it";
      std::filesystem::remove(job.cache_path);
    }
    cache::BuildControl control;
    control.rank = rank;
    control.world_size = group.world.world_size;
    control.barrier = [&group] { group.host->Barrier(); };
    auto built = cache::BuildStateCache(job.dataset, job.cache_options, job.cache_path, control);
    if (stats) *stats = built;
  }
  group.host->Barrier();
  return job.cache_path;
}

void CacheKey(const Config& config, std::ostream& out) {
  const auto job = PrepareCacheJob(config);
  out << job.fingerprint << "  " << job.cache_path.string() << "\n";
}

void CacheBuild(const Config& config, const std::filesystem::path& stats_out, std::ostream& out) {
  const auto world = distributed::ResolveWorld({}, distributed::ProcessEnvironment());
  auto job = PrepareCacheJob(config);
  cache::BuildStats stats;
  std::filesystem::path path;
  std::unique_ptr<distributed::RankLogPrefix> log_prefix;
  if (world.world_size > 1) {
    log_prefix = std::make_unique<distributed::RankLogPrefix>(world.rank, world.world_size);
    job.cache_options.device = distributed::LocalDevice(world, job.cache_options.device);
    distributed::CollectiveOptions collective;
    collective.timeout = std::chrono::milliseconds(
        static_cast<int64_t>(1000.0 * config.train.collective_timeout_s));
    // Ranks only exchange small host messages here (barriers), whatever device they compute on.
    auto group = distributed::JoinProcessGroup(world, torch::kCPU, collective);
    LOG(INFO) << "cache build on " << world.Describe();
    path = EnsureCacheFileOnRanks(job, group, &stats);
  } else {
    path = EnsureCacheFile(job, &stats);
  }
  if (world.rank != 0) return;
  if (stats.fingerprint.empty()) {
    out << "cache up to date: " << path.string() << " (key " << job.fingerprint << ")\n";
    return;
  }
  if (!stats_out.empty()) WriteJsonFile(stats_out, stats.ToJson());
  PrintStats(stats, out);
  out << "cache built: " << path.string() << " (key " << job.fingerprint << ")\n";
}

void CacheList(const Config& config, std::ostream& out) {
  const std::filesystem::path dir = config.cache.dir;
  const auto caches = cache::ListCaches(dir);
  if (caches.empty()) {
    out << "no caches in " << dir.string() << "\n";
    return;
  }
  out << std::left << std::setw(18) << "key" << std::setw(10) << "items" << std::setw(12) << "size" << std::setw(20)
      << "status" << "path\n";
  for (const auto& row : caches) {
    std::string status = row["status"].get<std::string>();
    if (status == "partial") {
      status += " " + std::to_string(row["chunks_done"].get<int64_t>()) + "/" +
                std::to_string(row["chunks_total"].get<int64_t>());
    }
    const std::string key = row["key"].get<std::string>();
    out << std::left << std::setw(18) << (key.empty() ? "?" : key) << std::setw(10)
        << (row.contains("items") ? std::to_string(row["items"].get<int64_t>()) : "?") << std::setw(12)
        << Mebibytes(row["bytes"].get<uintmax_t>()) << std::setw(20) << status << row["path"].get<std::string>()
        << "\n";
    if (row.contains("error")) out << "    " << row["error"].get<std::string>() << "\n";
  }
}

void CacheVerify(const Config& config, int rows, uint64_t seed, double tolerance, std::ostream& out) {
  if (rows < 1) throw std::runtime_error("--rows must be at least 1");
  const auto job = PrepareCacheJob(config);
  const auto path = job.cache_path;
  cache::StateFileReader reader(path);
  const auto& header = reader.header();
  if (header.fingerprint != job.fingerprint) {
    throw cache::CacheError(path.string() + ": holds key " + header.fingerprint + " but this config's key is " +
                            job.fingerprint + "; verify it with the config that built it");
  }
  if (header.items != job.dataset.item_ids) {
    throw cache::CacheError(path.string() + ": its item list differs from the dataset's; rebuild it");
  }
  const int64_t items = job.dataset.num_items();
  // Distinct rows, drawn with the seed.
  std::mt19937_64 rng(seed);
  std::set<int64_t> drawn;
  while (static_cast<int64_t>(drawn.size()) < std::min<int64_t>(rows, items)) {
    drawn.insert(1 + static_cast<int64_t>(rng() % static_cast<uint64_t>(items)));
  }
  const std::vector<int64_t> sample(drawn.begin(), drawn.end());
  // bf16 forwards round at every layer: a fresh pass over other batches differs by ~1e-3.
  if (tolerance <= 0) tolerance = job.cache_options.dtype == torch::kBFloat16 ? 2e-2 : 1e-4;

  const auto kept = cache::ResolveKeptLayers(job.cache_options);
  cache::StateComputer computer(job.dataset, job.cache_options, kept);
  const auto expected = computer.Compute(sample);
  double worst = 0;
  std::vector<int64_t> bad;
  for (size_t i = 0; i < sample.size(); ++i) {
    for (const auto& [modality, table] : {std::pair{std::string("text"), expected.text},
                                          std::pair{std::string("image"), expected.image}}) {
      if (!table.defined()) continue;
      const auto stored = reader.ReadRows(modality, sample[i], 1)[0].to(torch::kFloat32);
      const auto reference = table[static_cast<int64_t>(i)];
      const double diff = (stored - reference).abs().max().item<double>();
      const double scale = reference.abs().max().item<double>();
      worst = std::max(worst, diff);
      if (!(diff <= tolerance * (1.0 + scale))) bad.push_back(sample[i]);
    }
  }
  out << "verified " << sample.size() << " rows of " << path.string() << " (seed " << seed
      << "): max abs difference " << std::scientific << std::setprecision(3) << worst << std::defaultfloat << "\n";
  if (!bad.empty()) {
    std::string list;
    for (size_t i = 0; i < bad.size() && i < 10; ++i) list += (i ? ", " : "") + std::to_string(bad[i]);
    throw cache::CacheError(path.string() + ": " + std::to_string(bad.size()) + " sampled row(s) differ from a fresh "
                            "forward pass by more than " + std::to_string(tolerance) + " (rows " + list +
                            "); the cache is corrupt or was built differently: `iisan cache rm` it and rebuild");
  }
  out << "cache OK\n";
}

void CacheRemove(const Config& config, const std::string& key_or_path, std::ostream& out) {
  const std::filesystem::path dir = config.cache.dir;
  for (const auto& path : cache::RemoveCache(dir, key_or_path)) out << "removed " << path.string() << "\n";
}

cache::SpecResolver CacheServiceResolver(const std::filesystem::path& dir) {
  return [dir](const nlohmann::json& overlay) {
    // A client may name the cache's location only inside this service's folder (relative names
    // are taken inside it); wherever it names, the cache is kept at dir/<key>.h5.
    if (overlay.contains("cache") && overlay["cache"].is_object()) {
      for (const char* key : {"dir", "path"}) {
        const auto value = overlay["cache"].value(key, nlohmann::json());
        if (!value.is_string() || value.get<std::string>().empty()) continue;
        const std::filesystem::path named = value.get<std::string>();
        const bool the_folder = std::string(key) == "dir" &&
                                std::filesystem::weakly_canonical(named.is_absolute() ? named : dir / named) ==
                                    std::filesystem::weakly_canonical(dir);
        if (!the_folder) cache::RequireInsideCacheDir(dir, named, std::string("the request's cache.") + key);
      }
    }
    // The request's config goes through the schema like any config file; the caches live here.
    Config request_config = ConfigFromJson(Json(overlay), "the ensure request's config");
    request_config.cache.dir = dir.string();
    request_config.cache.path = "";
    request_config.cache.service = "";
    request_config.cache.token = "";
    if (train::UsesLiveBackbones(train::ParseMethod(request_config.model.method))) {
      request_config.model.method = "iisan";
    }
    auto job = std::make_shared<Job>(PrepareJob(request_config));
    cache::ServiceTarget target;
    target.key = job->fingerprint;
    target.path = job->cache_path;
    target.ensure = [job](const cache::BuildControl& control) {
      cache::EnsureRequest request;
      request.dataset = &job->dataset;
      request.options = job->cache_options;
      request.path = job->cache_path;
      request.fingerprint = job->fingerprint;
      return cache::EnsureStateCacheFile(request, control).built;
    };
    return target;
  };
}

void CacheServe(const Config& config, const ServeOptions& options, std::ostream& out) {
  if (!(options.idle_timeout_s > 0) || options.max_connections < 1) {
    throw std::runtime_error("cache serve: --idle-timeout must be positive and --max-connections at least 1");
  }
  const std::filesystem::path dir = std::filesystem::absolute(config.cache.dir);
  cache::ServiceOptions service;
  service.cache_dir = dir;
  service.listen = options.listen;
  service.socket_path = options.socket.empty() && options.listen.empty() ? dir / "service.sock"
                                                                          : std::filesystem::path(options.socket);
  service.token = options.token.empty() ? CacheServiceToken(config) : options.token;
  service.workers = options.workers;
  service.max_request_bytes = options.max_request_bytes;
  service.idle_timeout = std::chrono::milliseconds(static_cast<int64_t>(std::ceil(1000.0 * options.idle_timeout_s)));
  service.max_connections = options.max_connections;
  service.stop_on_signals = true;
  cache::CacheService server(service, CacheServiceResolver(dir));
  out << "cache service listening on " << server.endpoint() << " (caches in " << dir.string() << ")" << std::endl;
  server.Run();
  out << "cache service stopped\n";
}

}  // namespace iisan::launcher
