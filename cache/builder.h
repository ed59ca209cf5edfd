// Runs the frozen backbones once over every item and writes the kept layers' [CLS] states to
// an HDF5 state file (cache/state_file.h), in resumable chunks:
//   <cache>.partial/manifest.json   key, inputs and chunk layout of the build in progress
//   <cache>.partial/chunk-NNNNNN.bin  one finished chunk's rows (written to a temporary name,
//                                     renamed), with a checksum
// A killed build (kill -9, preemption) loses at most the chunks in flight: the next build with
// the same key finds the finished chunks and computes only the others; a partial folder of
// other inputs is discarded with a warning. Once every chunk exists, one process assembles the
// HDF5 file under a temporary name and renames it into place. Chunks can be shared out across
// ranks (BuildControl), which is the multi-GPU build.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "cache/cache_key.h"
#include "core/data/dataset.h"

namespace iisan::cache {

// Test-only fault injection: when set to k, a build process kills itself (SIGKILL) right after
// it has written its k-th chunk, as a preempted job would die.
inline constexpr const char* kEnvKillAfterChunk = "IISAN_CACHE_TEST_KILL_AFTER_CHUNK";

struct BuildControl {
  // This process computes the chunks c with c % world_size == rank; rank 0 assembles the file.
  int rank = 0;
  int world_size = 1;
  // Waits for every rank; required when world_size > 1.
  std::function<void()> barrier;
  // Called after each chunk this process finishes (and once at the start) with the chunks that
  // exist so far and the total.
  std::function<void(int64_t chunks_done, int64_t chunks_total)> on_progress;
};

// Timing and work of one build, for the log and for throughput reports (the benchmark hook).
struct BuildStats {
  std::string fingerprint;
  std::filesystem::path path;
  int64_t items = 0;
  int64_t chunks_total = 0;
  int64_t chunks_already_done = 0;  // found finished when this process started
  int64_t chunks_computed = 0;      // computed by this process
  int64_t items_computed = 0;       // by this process
  double seconds = 0;               // this process, from start to the file in place
  double forward_seconds_text = 0;  // the text backbone's forwards alone (device synchronised)
  double forward_seconds_image = 0;
  double setup_seconds = 0;         // loading (or randomly initialising) the backbones onto the device
  double prepare_seconds = 0;       // host thread: tokenising, decoding, resizing (beside the forwards)
  double wait_seconds = 0;          // the device loop waiting for prepared batches (host too slow)
  double write_seconds = 0;         // writing chunk files (beside the forwards, waited for here)
  double assemble_seconds = 0;      // rank 0: closing the HDF5 file, after reading in chunks it did not compute
  double flops_per_item_text = 0;   // analytic forward FLOPs (ForwardFlopsPerItem)
  double flops_per_item_image = 0;
  std::string device;
  std::string dtype;
  int rank = 0;
  int world_size = 1;

  nlohmann::json ToJson() const;
};

// Analytic forward FLOPs per item of the backbones the options name: 2 x the weight-matmul
// multiply-adds of every token (QKV, output, MLP; the ViT patch embedding) plus attention
// (QK^T and AV), at the padded text length and the ViT's patch count.
struct ForwardFlops {
  double text = 0;
  double image = 0;
};
ForwardFlops ForwardFlopsPerItem(const CacheBuildOptions& options);

// Where a StateComputer's time went, summed over its batches.
struct PipelineTimes {
  double prepare = 0;        // preparing batches on the host (runs beside the device's work)
  double wait = 0;           // the device loop waiting for a prepared batch
  double forward_text = 0;   // device-synchronised forwards, results copied back to the host
  double forward_image = 0;
};

// The backbones loaded once, computing the kept [CLS] states of any items: the builder's
// forward pass, and `iisan cache verify`'s reference.
class StateComputer {
 public:
  StateComputer(const data::Dataset& dataset, const CacheBuildOptions& options, std::vector<int> kept_layers);
  ~StateComputer();
  StateComputer(const StateComputer&) = delete;
  StateComputer& operator=(const StateComputer&) = delete;

  struct Rows {
    torch::Tensor text;   // float32 [n, K, D] on the host; undefined without text
    torch::Tensor image;  // likewise
  };
  // The states of item rows `rows` (1-based dataset rows), in batches of options.batch_size.
  Rows Compute(const std::vector<int64_t>& rows);
  // The states of each list of rows in turn, handed to `done` as each list completes, on this
  // thread. One host thread tokenises and decodes (over options.threads workers) up to two
  // batches ahead of the device, across list boundaries. An error in either half is rethrown.
  // (CUDA graphs of the forwards were tried: at batches of 256 and more they were no faster on
  // an H200, experiments/results/cache-h200.md.)
  void ComputeParts(const std::vector<std::vector<int64_t>>& parts, const std::function<void(size_t part, Rows rows)>& done);

  int64_t text_dim() const;
  int64_t image_dim() const;
  const PipelineTimes& times() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Builds the cache into `path` (see the file comment), resuming a partial build of the same key.
// With several ranks every rank must call this with the same arguments.
BuildStats BuildStateCache(const data::Dataset& dataset, const CacheBuildOptions& options,
                           const std::filesystem::path& path, const BuildControl& control = {});

// "<cache>.partial": the folder of a build in progress.
std::filesystem::path PartialBuildDir(const std::filesystem::path& cache_path);

// The state of a partial build folder, for `iisan cache ls`: chunks finished and in total, and
// the key it builds. Empty fingerprint when its manifest is missing or unreadable.
struct PartialBuildInfo {
  std::string fingerprint;
  int64_t items = 0;
  int64_t chunks_done = 0;
  int64_t chunks_total = 0;
};
PartialBuildInfo InspectPartialBuild(const std::filesystem::path& partial_dir);

}  // namespace iisan::cache
