// The `iisan` subcommands, callable from main and from tests. Each returns normally on success
// and throws with a message that names the file, key or value at fault otherwise.
#pragma once

#include <chrono>
#include <filesystem>
#include <ostream>
#include <string>

#include "cache/service.h"
#include "core/train/run_summary.h"
#include "launcher/config.h"
#include "launcher/startup_clock.h"

namespace iisan::launcher {

// `iisan data stats DIR`: users, items, interactions after preprocessing.
void DataStats(const std::filesystem::path& dir, std::ostream& out);

struct SynthCommandOptions {
  std::filesystem::path dir;
  int users = 3000;
  int items = 1200;
  int categories = 12;
  int image_size = 32;
  uint64_t seed = 7;
  bool overwrite = false;
};
// `iisan data synth DIR`: the built-in synthetic multimodal dataset.
void DataSynth(const SynthCommandOptions& options, std::ostream& out);

// `iisan data images DIR --size S`: a generated JPEG for every item without an image.
void DataImages(const std::filesystem::path& dir, int size, uint64_t seed, int threads, std::ostream& out);

// `iisan cache build`: builds the job's cache unless a valid one exists (resuming a killed
// build; through the service when cache.service is set; sharded across the ranks when run
// under mpirun, srun or `iisan launch`); prints its path and, when it built, the timing
// (also written to `stats_out` when not empty, and next to the cache as <key>.stats.json).
void CacheBuild(const Config& config, const std::filesystem::path& stats_out, std::ostream& out);

// `iisan cache key`: the config's cache key and the path its cache has.
void CacheKey(const Config& config, std::ostream& out);

// `iisan cache ls`: caches and partial builds in cache.dir.
void CacheList(const Config& config, std::ostream& out);

// `iisan cache verify`: recomputes `rows` items drawn with `seed` and compares them with the
// cache within `tolerance` (absolute, plus the same relative; 0 picks one for cache.dtype);
// throws on a mismatch.
void CacheVerify(const Config& config, int rows, uint64_t seed, double tolerance, std::ostream& out);

// `iisan cache rm KEY|PATH`: removes a cache of cache.dir, named by its key or its <key>.h5
// path in cache.dir, with its partial build, lock and stats; anything else is refused untouched.
void CacheRemove(const Config& config, const std::string& key_or_path, std::ostream& out);

struct ServeOptions {
  std::string socket;  // empty: cache.dir/service.sock (unless listen is set)
  std::string listen;  // HOST:PORT
  std::string token;   // empty: CacheServiceToken(config)
  int workers = 4;
  size_t max_request_bytes = cache::kDefaultMaxRequestBytes;
  double idle_timeout_s = std::chrono::duration<double>(cache::kDefaultIdleTimeout).count();
  int max_connections = cache::kDefaultMaxConnections;
};
// `iisan cache serve`: the cache service (cache/service.h) for cache.dir, until SIGINT/SIGTERM.
void CacheServe(const Config& config, const ServeOptions& options, std::ostream& out);

// How `cache serve` turns an ensure request's config overlay into a build of a cache in `dir`:
// through the config schema like any config file; a cache.path or cache.dir outside `dir` is
// refused by name, and the cache is kept at dir/<key>.h5.
cache::SpecResolver CacheServiceResolver(const std::filesystem::path& dir);

// `iisan train`: RunTraining (training_run.h) and a line with the result. Returns the summary
// (empty on ranks other than 0).
train::RunSummary Train(const Config& config, std::ostream& out);

// The exit status of a run stopped by SIGUSR2 or SIGTERM (EX_TEMPFAIL: its checkpoint continues it).
inline constexpr int kExitCancelled = 75;

// `iisan train` from the command line: Train, with SIGUSR2 and SIGTERM stopping the run after the
// step in flight (preemption.h): rank 0 writes a resumable checkpoint and, inside a Slurm job,
// requeues it (train.max_requeues). Returns the exit status: 0, or kExitCancelled when stopped.
// `startup`: the process's start-up clock, with the phases before the config marked (null: the
// start-up is measured from this call).
int TrainCommand(const Config& config, std::ostream& out, StartupClock* startup = nullptr);

// `iisan eval RUN_DIR [--set key=value]…`: re-evaluates a finished run's best checkpoint on valid
// and test, with its config.json and the overrides (the cache service's token, which run
// directories do not keep: --set cache.token=… or IISAN_CACHE_TOKEN).
Json Evaluate(const std::filesystem::path& run_dir, const std::vector<std::string>& overrides, std::ostream& out);

struct DescribeOptions {
  std::string method = "iisan";
  std::filesystem::path text_backbone;
  std::filesystem::path image_backbone;
  std::string modality = "text+image";
  int max_seq_len = 10;
};
// `iisan describe`: trainable and frozen parameters per module of a method's model; returns
// the method's trainable total (base size: IISAN 4,113,877, FFT 194,897,216, ...).
int64_t Describe(const DescribeOptions& options, std::ostream& out);

// `iisan demo`: synthetic data → cache → IISAN training → test HR@10 / NDCG@10 of IISAN and of
// the popularity baseline.
void Demo(const std::filesystem::path& workdir, const std::vector<std::string>& overrides, std::ostream& out);

// `iisan launch --nproc N -- ARGS…`: runs N local ranks of `iisan ARGS…` (the TCP rendezvous
// of distributed/local_launch.h, no MPI). Returns the job's exit code (0 when every rank
// succeeded); a failure names the ranks on `err`.
int Launch(int nproc, const std::vector<std::string>& args, std::ostream& err);

// 12345678 → "12,345,678".
std::string WithThousands(int64_t value);

}  // namespace iisan::launcher
